// streamScript on a real sshd host (network namespaces, test/support/netns.ts): lines arrive
// while the script still runs, a last line without a newline is handed over at the end, the
// exit status and stderr come back, and closing the channel ends a script that keeps writing.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import { openSession, type Session, streamScript } from "@dstack-ts/ssh"
import { createNetnsHosts, describeWithNetns, type NetnsHosts } from "../../../test/support/netns.ts"

let hosts: NetnsHosts
let session: Session

describeWithNetns(() => {
  beforeAll(async () => {
    hosts = await createNetnsHosts({ count: 1 })
    const [h0] = hosts.hosts
    session = await openSession({ hostname: h0.ip, port: h0.port, user: h0.user, privateKey: hosts.privateKey }, { readyTimeoutMs: 10_000, keepaliveIntervalMs: 0, keepaliveCountMax: 3 })
  }, 120_000)
  afterAll(async () => {
    session?.close()
    await hosts?.down()
  })

  it("hands over each line as the script writes it, then its status and stderr", async () => {
    const flag = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "stream-")), "go")
    const lines: Array<string> = []
    // The script waits for a file this test writes only once the first line has arrived.
    const script = await streamScript(session, 'echo "first $1"; while [ ! -e "$2" ]; do sleep 0.05; done; echo second; echo oops >&2; printf last; exit 3', ["it's", flag], (l) => lines.push(l))
    for (let i = 0; i < 200 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 50))
    expect(lines).toEqual(["first it's"])
    fs.writeFileSync(flag, "")
    expect(await script.done).toEqual({ code: 3, stderr: "oops\n" })
    expect(lines).toEqual(["first it's", "second", "last"])
    fs.rmSync(path.dirname(flag), { recursive: true, force: true })
  })

  it("closing the channel ends a script that keeps writing (its next write fails), and the session stays usable", async () => {
    const marker = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "stream-")), "ended")
    const lines: Array<string> = []
    const script = await streamScript(session, 'trap "echo cut >\\"$1\\"; exit 1" PIPE; while :; do echo tick; sleep 0.05; done', [marker], (l) => lines.push(l))
    for (let i = 0; i < 200 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 50))
    script.close()
    expect((await script.done).code).not.toBe(0)
    for (let i = 0; i < 100 && !fs.existsSync(marker); i++) await new Promise((r) => setTimeout(r, 50))
    expect(fs.readFileSync(marker, "utf8")).toBe("cut\n")
    const again: Array<string> = []
    expect((await (await streamScript(session, "echo again", [], (l) => again.push(l))).done).code).toBe(0)
    expect(again).toEqual(["again"])
    fs.rmSync(path.dirname(marker), { recursive: true, force: true })
  })
})
