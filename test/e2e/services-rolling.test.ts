// Rolling deployment of a service, end to end on the local backend: re-applying a changed spec
// of a running service (the plan naming it as its current resource, as `dstack apply` does)
// replaces its replicas one at a time under constant load through the proxy — no request fails
// and the answers switch from the old version to the new; a change of `replicas` alone applies
// without new replicas; a new replica that never passes its probes leaves the old ones serving
// and the service's deployment says why; a change no update may make is refused naming it.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { Server } from "../../core/src/server/createServer.ts"
import type { Serving } from "../../core/src/server/serve.ts"
import { Client } from "@dstack-ts/client"
import { render as renderPs } from "../../cli/src/commands/ps.ts"
import type { httpCall } from "../support/api.ts"
import { startLocalServer } from "../support/localServer.ts"
import { applyService, reapplyService, serviceRunSpec, waitRunning } from "../support/services.ts"

const TOKEN = "services-rolling-token"
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-services-rolling-"))
let server: Server
let serving: Serving
let call: ReturnType<typeof httpCall>

const probes = [{ type: "http", url: "/ready", headers: [{ name: "x-probe", value: "dstack" }], interval: "1s", timeout: "2s", ready_after: 1 }]
const spec = (version: string, extra: Record<string, unknown> = {}) => ({ auth: false, replicas: 2, probes, env: { VERSION: version }, ...extra })

const info = async () => (await call("/api/project/main/services/get", { run_name: "roll" })).body
const run = async () => (await call("/api/project/main/runs/get", { run_name: "roll" })).body
const activeJobs = async () => (await run()).jobs.filter((j: any) => !["terminating", "terminated", "failed", "aborted", "done"].includes(j.job_submissions.at(-1).status))

/** Requests through the proxy, four at a time, until stopped: every answer's status and version. */
const load = () => {
  const answers: Array<{ status: number; version: string | undefined; error?: string }> = []
  let stopped = false
  const worker = async () => {
    while (!stopped) {
      try {
        const res = await fetch(`${serving.url}/proxy/services/main/roll/path`)
        const body = res.status === 200 ? await res.json() : await res.text()
        answers.push({ status: res.status, version: (body as { version?: string }).version, ...(res.status !== 200 ? { error: String(body) } : {}) })
      } catch (error) {
        answers.push({ status: 0, version: undefined, error: String(error) })
      }
    }
  }
  const workers = [worker(), worker(), worker(), worker()]
  return {
    answers,
    stop: async () => {
      stopped = true
      await Promise.all(workers)
      return answers
    }
  }
}

beforeAll(async () => {
  ;({ server, serving, call } = await startLocalServer({ token: TOKEN, maxInstances: 8, workDir: path.join(dir, "local"), server: { services: { holdTimeoutMs: 30_000 } } }))
}, 120_000)
afterAll(async () => {
  await call?.("/api/project/main/runs/stop", { runs_names: ["roll"], abort: true })
  await serving?.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

describe("rolling deployment", () => {
  let port: number

  it("rolls the replicas one at a time to a re-applied spec with no failed request under load", async () => {
    port = await applyService(call, "roll", spec("v1"))
    await waitRunning(call, "roll", 2)
    await expect.poll(async () => (await info()).replicas.map((r: any) => r.in_rotation), { timeout: 60_000, interval: 250 }).toEqual([true, true])
    const before = (await activeJobs()).map((j: any) => j.job_submissions.at(-1).id)
    expect((await run()).deployment_num).toBe(0)

    const traffic = load()
    await expect.poll(() => traffic.answers.length, { timeout: 10_000 }).toBeGreaterThan(20)
    const applied = await reapplyService(call, "roll", port, spec("v2"))
    expect(applied.status).toBe(200)
    expect(applied.body.status).toBe("running")
    // Upstream's deployment number: the update is deployment 1; the replicas it must replace stay on 0.
    expect(applied.body.deployment_num).toBe(1)
    expect(applied.body.jobs.map((j: any) => j.job_submissions.at(-1).deployment_num)).toEqual([0, 0])

    // The roll: a third replica serving at most at any time (max surge 1; a drained one finishes
    // its requests out of rotation), and the old two gone once it is over.
    let most = 0
    // What the last look saw, said if the roll does not finish (it failed once in CI, not since).
    let seen = ""
    try {
      await expect.poll(async () => {
        const jobs = await activeJobs()
        const ids = jobs.map((j: any) => j.job_submissions.at(-1).id)
        const service = await info()
        const replicas = service.replicas
        seen = JSON.stringify({ before, active: jobs.map((j: any) => j.job_submissions.at(-1)), service })
        most = Math.max(most, replicas.filter((r: any) => !r.draining).length)
        return ids.length === 2 && ids.every((id: string) => !before.includes(id)) && replicas.length === 2 && replicas.every((r: any) => r.in_rotation)
      }, { timeout: 120_000, interval: 200 }).toBe(true)
    } catch (error) {
      throw new Error(`the roll did not finish; last seen: ${seen}`, { cause: error })
    }
    // A few more answers from the new replicas only.
    const settled = traffic.answers.length
    await expect.poll(() => traffic.answers.length, { timeout: 10_000 }).toBeGreaterThan(settled + 20)
    const answers = await traffic.stop()

    expect(answers.filter((a) => a.status !== 200)).toEqual([])
    const versions = answers.map((a) => a.version)
    expect(versions[0]).toBe("v1")
    expect(versions.at(-1)).toBe("v2")
    // Once the last old replica is drained nothing answers v1 again.
    expect(versions.slice(settled).every((v) => v === "v2")).toBe(true)
    expect(most).toBeLessThanOrEqual(3)
    await expect.poll(async () => (await info()).deployment, { timeout: 10_000, interval: 250 }).toBeUndefined()
    // The old replicas were stopped as scaled down, not failed.
    const old = (await run()).jobs.map((j: any) => j.job_submissions.at(-1)).filter((s: any) => before.includes(s.id))
    await expect.poll(async () =>
      (await run()).jobs.map((j: any) => j.job_submissions.at(-1)).filter((s: any) => before.includes(s.id)).map((s: any) => [s.status, s.termination_reason]),
      { timeout: 30_000, interval: 250 }).toEqual([["terminated", "scaled_down"], ["terminated", "scaled_down"]])
    expect(old.length).toBe(2)
    expect(old.map((s: any) => s.deployment_num)).toEqual([0, 0])
    expect((await activeJobs()).map((j: any) => j.job_submissions.at(-1).deployment_num)).toEqual([1, 1])
  }, 240_000)

  it("applies a change of replicas alone without replacing a replica", async () => {
    const before = (await activeJobs()).map((j: any) => j.job_submissions.at(-1).id)
    const applied = await reapplyService(call, "roll", port, spec("v2", { replicas: 1 }))
    expect(applied.status).toBe(200)
    await expect.poll(async () => (await activeJobs()).map((j: any) => j.job_submissions.at(-1).id), { timeout: 30_000, interval: 250 }).toEqual([before[0]])
    expect((await info()).deployment).toBeUndefined()
    // A replica the update leaves as it is joins the new deployment in place.
    expect((await run()).deployment_num).toBe(2)
    expect((await activeJobs()).map((j: any) => j.job_submissions.at(-1).deployment_num)).toEqual([2])
    const again = await reapplyService(call, "roll", port, spec("v2"))
    expect(again.status).toBe(200)
    await waitRunning(call, "roll", 2)
    const after = (await activeJobs()).map((j: any) => j.job_submissions.at(-1).id)
    expect(after.length).toBe(2)
    expect(after).toContain(before[0])
    await expect.poll(async () => (await info()).replicas.filter((r: any) => r.in_rotation).length, { timeout: 60_000, interval: 250 }).toBe(2)
  }, 120_000)

  it("keeps the old replicas serving while a new one never passes its probes, and says why", async () => {
    const serving2 = (await activeJobs()).map((j: any) => j.job_submissions.at(-1).id)
    const applied = await reapplyService(call, "roll", port, spec("v3", { env: { VERSION: "v3", READY_FILE: path.join(dir, "never") } }))
    expect(applied.status).toBe(200)
    await expect.poll(async () => (await info()).deployment?.message ?? "", { timeout: 60_000, interval: 250 }).toMatch(/has not passed its probes.*probe GET \/ready answered 503/)
    const deployment = (await info()).deployment
    expect(deployment.outdated_replicas).toBe(2)
    expect(deployment.message).toMatch(/the 2 replica\(s\) on the previous spec keep serving/)
    // Still served, by the previous version only; one new replica at most was started.
    for (let i = 0; i < 10; i++) {
      const res = await fetch(`${serving.url}/proxy/services/main/roll/path`)
      expect(res.status).toBe(200)
      expect((await res.json()).version).toBe("v2")
    }
    const jobs = await activeJobs()
    expect(jobs.length).toBe(3)
    expect(jobs.map((j: any) => j.job_submissions.at(-1).id).filter((id: string) => serving2.includes(id)).length).toBe(2)
    // The old replicas are on deployment 3, the one that never gets ready on 4.
    expect((await run()).deployment_num).toBe(4)
    expect(jobs.map((j: any) => j.job_submissions.at(-1).deployment_num).sort()).toEqual([3, 3, 4])
    // `dstack ps -v` says why the roll is stuck, with each submission's deployment.
    const ps = await renderPs(Client.connect({ name: "main", url: serving.url, token: TOKEN }), false, false, true)
    expect(ps).toMatch(/^roll deployment=4\s+running\s+\S+ ago\s+rolling: new replica \d+ has not passed its probes for \d+ s \(probe GET \/ready answered 503\); the 2 replica\(s\) on the previous spec keep serving; 2\/2 replicas in rotation, \d+ requests \(0 errors\)/m)
    expect((ps.match(/^ {2}roll-\d+-\d+ deployment=3\s+running/gm) ?? []).length, ps).toBe(2)
    expect(ps).toMatch(/^ {2}roll-\d+-\d+ deployment=4\s+running/m)

    // Applying the previous spec again drains the replica that never became ready.
    expect((await reapplyService(call, "roll", port, spec("v2"))).status).toBe(200)
    await expect.poll(async () => (await activeJobs()).map((j: any) => j.job_submissions.at(-1).id).sort(), { timeout: 30_000, interval: 250 }).toEqual([...serving2].sort())
    await expect.poll(async () => (await info()).deployment, { timeout: 10_000, interval: 250 }).toBeUndefined()
  }, 120_000)

  it("refuses a change no update may make, naming the field, and an apply whose plan does not name the run", async () => {
    const refused = await reapplyService(call, "roll", port, spec("v2", { auth: true }))
    expect(refused.status).toBe(400)
    expect(JSON.stringify(refused.body)).toMatch(/auth/)
    const blind = await call("/api/project/main/runs/apply", { plan: { run_spec: serviceRunSpec("roll", port, spec("v4")) } })
    expect(blind.status).toBe(400)
    expect(JSON.stringify(blind.body)).toMatch(/current resource/)
  }, 60_000)
})
