// `dstack secret set|list|get|delete` through the real CLI against `dstack server` (the default
// build): the server makes its secrets key in its directory with mode 0600, list shows names
// only, get the value, a value piped on stdin stays out of argv, and `dstack apply` of a task
// whose env refers to a secret runs with its value.
import { spawn, type ChildProcess } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

import { CLI } from "../support/cli.ts"
const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-cli-secrets-"))
const serverDir = path.join(home, "server")
const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, DSTACK_SERVER_DIR: serverDir, NO_COLOR: "1" }
delete env.DSTACK_SERVER_SECRETS_KEY
let server: ChildProcess

const dstack = (args: ReadonlyArray<string>, options: { cwd?: string; stdin?: string } = {}) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: options.cwd ?? home, env })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.on("close", (code) => resolve({ code, stdout, stderr }))
    if (options.stdin !== undefined) child.stdin.end(options.stdin)
    else child.stdin.end()
  })

beforeAll(async () => {
  server = spawn(process.execPath, [CLI, "server", "--port", "0"], { env })
  await new Promise<void>((resolve, reject) => {
    let out = ""
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 90_000)
    const onData = (d: Buffer) => {
      out += d
      if (/running at http/.test(out)) {
        clearTimeout(timer)
        resolve()
      }
    }
    server.stdout!.on("data", onData)
    server.stderr!.on("data", onData)
  })
}, 120_000)

afterAll(async () => {
  server?.kill("SIGTERM")
  await new Promise((r) => server?.once("exit", r))
  fs.rmSync(home, { recursive: true, force: true })
}, 30_000)

describe("dstack secret", () => {
  it("sets, lists (names only), gets and deletes secrets; the key file is the server's, mode 0600", async () => {
    expect(fs.statSync(path.join(serverDir, "secrets.key")).mode & 0o777).toBe(0o600)
    const set = await dstack(["secret", "set", "HF_TOKEN", "hf-value-123"])
    expect(set.stderr).toBe("")
    expect(set.code).toBe(0)
    expect(set.stdout).toContain("Secret HF_TOKEN set in project main")
    expect((await dstack(["secret", "set", "PIPED"], { stdin: "from-stdin-456\n" })).code).toBe(0)

    const list = await dstack(["secret", "list"])
    expect(list.code).toBe(0)
    expect(list.stdout).toMatch(/NAME\s+VALUE\nPIPED\s+\*{6}\nHF_TOKEN\s+\*{6}/)
    expect(list.stdout).not.toContain("hf-value-123")
    expect((await dstack(["secret"])).stdout).toBe(list.stdout)

    const get = await dstack(["secret", "get", "PIPED"])
    expect(get.stdout).toMatch(/PIPED\s+from-stdin-456\n/)

    expect((await dstack(["secret", "delete", "HF_TOKEN", "-y"])).code).toBe(0)
    const gone = await dstack(["secret", "get", "HF_TOKEN"])
    expect(gone.code).toBe(1)
    expect(gone.stderr).toContain("Secret HF_TOKEN does not exist in project main")
    const bad = await dstack(["secret", "set", "bad name", "v"])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain("Secret name should match regex")
  }, 120_000)

  it("a task's env reads a secret", async () => {
    const dir = path.join(home, "task")
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(path.join(dir, ".dstack.yml"), [
      "type: task",
      "name: cli-secret",
      "env:",
      "  TOKEN: ${{ secrets.PIPED }}",
      "commands:",
      "  - printf %s \"$TOKEN\" | sha256sum",
      "resources:\n  cpu: 1..\n  memory: 1GB..\n  disk: 1GB..",
      ""
    ].join("\n"))
    const res = await dstack(["apply", "-f", ".dstack.yml", "-y"], { cwd: dir })
    expect(res.stderr).not.toMatch(/✗/)
    expect(res.code).toBe(0)
    expect(res.stdout).toContain(createHash("sha256").update("from-stdin-456").digest("hex"))
    expect(res.stdout).not.toContain("from-stdin-456")
  }, 120_000)
})
