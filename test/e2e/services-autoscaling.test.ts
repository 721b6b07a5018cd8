// Autoscaling in the server, end to end: a service with `replicas: 0..2` and `scaling` (delays
// 0) on the local backend. A request that finds no replica is held while one starts and is then
// served; a burst of requests raises the replica count; when the traffic is over the count goes
// back to zero — and a request still in flight on a replica being removed is answered whole.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { Server } from "../../core/src/server/createServer.ts"
import type { Serving } from "../../core/src/server/serve.ts"
import type { httpCall } from "../support/api.ts"
import { startLocalServer } from "../support/localServer.ts"
import { applyService } from "../support/services.ts"

const TOKEN = "autoscaling-e2e-token"
let server: Server
let serving: Serving
let call: ReturnType<typeof httpCall>

const auth = { authorization: `Bearer ${TOKEN}` }
const url = (rest: string) => `${serving.url}/proxy/services/main/auto${rest}`
const info = async () => (await call("/api/project/main/services/get", { run_name: "auto" })).body

beforeAll(async () => {
  ;({ server, serving, call } = await startLocalServer({ token: TOKEN, maxInstances: 8, server: { services: { holdTimeoutMs: 60_000 } } }))
}, 60_000)
afterAll(async () => {
  await call?.("/api/project/main/runs/stop", { runs_names: ["auto"], abort: true })
  await serving?.close()
})

describe("autoscaling without a gateway", () => {
  it("holds a request at zero replicas while one starts, follows a burst up, and scales back to zero after it", async () => {
    await applyService(call, "auto", {
      replicas: "0..2",
      scaling: { metric: "rps", target: 2, window: "30s", scale_up_delay: 0, scale_down_delay: 0 }
    })
    const run = (await call("/api/project/main/runs/get", { run_name: "auto" })).body
    expect(run.jobs).toEqual([])

    // At zero: the first request waits for a replica to start, then is served.
    const first = await fetch(url("/path"), { headers: auth })
    expect(first.status).toBe(200)
    expect((await first.json()).url).toBe("/path")
    expect((await info()).replicas.length).toBe(1)

    // A burst: 90 requests in about 3 s is 3 per second over the 30 s window, above the target of 2.
    for (let i = 0; i < 30; i++) {
      const answers = await Promise.all([1, 2, 3].map(() => fetch(url("/path"), { headers: auth }).then((r) => r.status)))
      expect(answers).toEqual([200, 200, 200])
      await new Promise((r) => setTimeout(r, 100))
    }
    await expect.poll(async () => (await info()).desired_replicas, { timeout: 10_000 }).toBe(2)
    await expect.poll(async () => (await info()).replicas.length, { timeout: 60_000, interval: 250 }).toBe(2)

    // The burst is over: the count falls as it leaves the window. A slow request in flight on a
    // replica being drained is answered whole before that replica stops.
    const slow = fetch(url("/slow?ms=8000"), { headers: auth }).then(async (r) => ({ status: r.status, text: await r.text() }))
    await expect.poll(async () => (await info()).desired_replicas, { timeout: 60_000, interval: 500 }).toBe(0)
    expect((await slow).status).toBe(200)
    await expect.poll(async () => (await info()).replicas.length, { timeout: 30_000, interval: 250 }).toBe(0)
    // Out of rotation first, then stopped: the jobs end as scaled down (`terminating` on the way).
    const lastSubmissions = async () =>
      (await call("/api/project/main/runs/get", { run_name: "auto" })).body.jobs.map((j: any) => j.job_submissions.at(-1))
    await expect.poll(async () => (await lastSubmissions()).every((sub: any) => sub.status === "terminated"), { timeout: 30_000, interval: 250 }).toBe(true)
    const after = (await call("/api/project/main/runs/get", { run_name: "auto" })).body
    const last = after.jobs.map((j: any) => j.job_submissions.at(-1))
    expect(last.length).toBeGreaterThanOrEqual(2)
    for (const sub of last) expect([sub.status, sub.termination_reason]).toEqual(["terminated", "scaled_down"])
    // Scaled to zero, the service is still up: the next request starts a replica again.
    expect(after.status).toBe("running")
    const again = await fetch(url("/path"), { headers: auth })
    expect(again.status).toBe(200)
  }, 240_000)
})
