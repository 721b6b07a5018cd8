// Readiness probes of a service, end to end on the local backend: a replica whose app listens
// but whose probe fails takes no request (one sent meanwhile is held); once the probe passes
// `ready_after` times in a row the replica enters the rotation and the held request is served;
// a probe failing later takes it out again, unless the probe says `until_ready`.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { Server } from "../../core/src/server/createServer.ts"
import type { Serving } from "../../core/src/server/serve.ts"
import type { httpCall } from "../support/api.ts"
import { startLocalServer } from "../support/localServer.ts"
import { applyService, waitRunning } from "../support/services.ts"

const TOKEN = "services-probes-token"
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-services-probes-"))
const readyFile = path.join(dir, "ready")
let server: Server
let serving: Serving
let call: ReturnType<typeof httpCall>

beforeAll(async () => {
  ;({ server, serving, call } = await startLocalServer({ token: TOKEN, maxInstances: 4, workDir: path.join(dir, "local") }))
}, 120_000)
afterAll(async () => {
  await call?.("/api/project/main/runs/stop", { runs_names: ["probed", "probed-once"], abort: true })
  await serving?.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

describe("service probes", () => {
  it("keeps a replica out of rotation until its probe passes ready_after times, holding requests meanwhile", async () => {
    const port = await applyService(call, "probed", {
      auth: false,
      env: { READY_FILE: readyFile },
      probes: [{ type: "http", url: "/ready", headers: [{ name: "x-probe", value: "dstack" }], interval: "1s", timeout: "2s", ready_after: 2 }]
    })
    await waitRunning(call, "probed")
    // The app listens (it answers directly) while its probe fails.
    await expect.poll(async () => (await fetch(`http://127.0.0.1:${port}/path`).catch(() => undefined))?.status, { timeout: 30_000 }).toBe(200)
    const replicas = async () => (await call("/api/project/main/services/get", { run_name: "probed" })).body.replicas
    expect((await replicas()).map((r: any) => r.ready)).toEqual([false])

    let served = false
    const held = fetch(`${serving.url}/proxy/services/main/probed/path`).then(async (r) => {
      served = true
      return { status: r.status, body: await r.json() }
    })
    // Three probe intervals with the probe failing: the request is still held.
    await new Promise((r) => setTimeout(r, 3_000))
    expect(served).toBe(false)
    expect((await replicas()).map((r: any) => r.ready)).toEqual([false])

    fs.writeFileSync(readyFile, "")
    await expect.poll(async () => (await replicas()).map((r: any) => r.ready), { timeout: 30_000, interval: 250 }).toEqual([true])
    const answer = await held
    expect(answer.status).toBe(200)
    expect(answer.body.url).toBe("/path")

    // The probe goes on (until_ready is false by default): failing again takes the replica out
    // of rotation, and passing again brings it back.
    fs.rmSync(readyFile)
    await expect.poll(async () => (await replicas()).map((r: any) => r.ready), { timeout: 30_000, interval: 250 }).toEqual([false])
    fs.writeFileSync(readyFile, "")
    await expect.poll(async () => (await replicas()).map((r: any) => r.ready), { timeout: 30_000, interval: 250 }).toEqual([true])
  }, 120_000)

  it("stops probing a replica with until_ready once it is ready", async () => {
    const onceFile = path.join(dir, "once")
    fs.writeFileSync(onceFile, "")
    await applyService(call, "probed-once", {
      auth: false,
      env: { READY_FILE: onceFile },
      probes: [{ type: "http", url: "/ready", headers: [{ name: "x-probe", value: "dstack" }], interval: "1s", ready_after: 1, until_ready: true }]
    })
    const replicas = async () => (await call("/api/project/main/services/get", { run_name: "probed-once" })).body.replicas
    await expect.poll(async () => (await replicas()).map((r: any) => r.ready), { timeout: 60_000, interval: 250 }).toEqual([true])
    fs.rmSync(onceFile)
    await new Promise((r) => setTimeout(r, 3_000))
    expect((await replicas()).map((r: any) => r.ready)).toEqual([true])
    expect((await fetch(`${serving.url}/proxy/services/main/probed-once/path`)).status).toBe(200)
  }, 120_000)
})
