// A service replica whose job fails, end to end on the local backend with real processes
// (test/support/service-app.mjs, whose /crash answers and then exits with code 3). Upstream's
// rule (0.21.2, background/pipeline_tasks/runs/active.py): a failed replica job whose failure
// `retry` covers is resubmitted while the other replicas keep the run running; without `retry`
// the run ends, failed with `job_failed`. Here: with `retry`, the crashed replica leaves the
// proxy's rotation (requests under load keep succeeding on the other one), a new submission of
// the same replica starts, the run never leaves `running`, no extra replica is added, and the
// new process takes requests. The only replica of an autoscaled service failing sends the run to
// `pending` for upstream's backoff: the autoscaler adds no replica beside the one the engine
// resubmits, and a request held meanwhile is served by the resubmitted replica. Without
// `retry`, the run fails and the proxy says it has finished.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { Server } from "../../core/src/server/createServer.ts"
import type { Serving } from "../../core/src/server/serve.ts"
import type { httpCall } from "../support/api.ts"
import { startLocalServer } from "../support/localServer.ts"
import { applyService, waitRunning } from "../support/services.ts"
import { makeUntil } from "../support/until.ts"

const TOKEN = "services-failure-token"
let server: Server
let serving: Serving
let call: ReturnType<typeof httpCall>

const getRun = async (name: string) => (await call("/api/project/main/runs/get", { run_name: name })).body
const proxied = (name: string, rest: string) => fetch(`${serving.url}/proxy/services/main/${name}${rest}`)

const until = makeUntil({ timeoutMs: 60_000, everyMs: 100 })

/** Requests through the proxy, two at a time, until stopped: every answer's status and replica. */
const load = (name: string) => {
  const answers: Array<{ status: number; replica?: string; error?: string }> = []
  let stopped = false
  const worker = async () => {
    while (!stopped) {
      try {
        const res = await proxied(name, "/path")
        const text = await res.text()
        answers.push(res.status === 200 ? { status: 200, replica: JSON.parse(text).replica } : { status: res.status, error: text })
      } catch (error) {
        answers.push({ status: 0, error: String(error) })
      }
    }
  }
  const workers = [worker(), worker()]
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
  ;({ server, serving, call } = await startLocalServer({ token: TOKEN, maxInstances: 8, server: { services: { holdTimeoutMs: 45_000 } } }))
}, 120_000)
afterAll(async () => {
  for (const name of ["crashy", "lonely", "fragile"]) await call?.("/api/project/main/runs/stop", { runs_names: [name], abort: true })
  await serving?.close()
})

describe("a service replica whose job fails", () => {
  it("with retry: leaves the rotation, is resubmitted while the other serves, and then serves again", async () => {
    await applyService(call, "crashy", { auth: false, replicas: 2, retry: { on_events: ["error"], duration: "1h" } })
    const before = await waitRunning(call, "crashy", 2)
    expect(before.jobs).toHaveLength(2)
    // Both replicas answer before the crash.
    const replicasBefore = await until("both replicas answer", async () => {
      const seen = new Set<string>()
      for (let i = 0; i < 8; i++) seen.add(JSON.parse(await (await proxied("crashy", "/path")).text()).replica)
      return seen
    }, (seen) => seen.size === 2)

    // The run's status, sampled from the crash until the replica is back.
    const statuses = new Set<string>()
    const traffic = load("crashy")
    const crash = await proxied("crashy", "/crash")
    expect(crash.status).toBe(200)
    const crashed = await crash.text()
    expect(replicasBefore.has(crashed)).toBe(true)

    const after = await until("the crashed replica resubmitted and running", async () => {
      const run = await getRun("crashy")
      statuses.add(run.status)
      return run
    }, (run) =>
      run.jobs.some((j: any) => j.job_submissions.length === 2 && j.job_submissions.at(-1).status === "running") || ["failed", "terminated", "done"].includes(run.status))
    const retried = after.jobs.find((j: any) => j.job_submissions.length === 2)
    expect(retried, JSON.stringify(after.jobs.map((j: any) => j.job_submissions))).toBeDefined()
    const failed = retried.job_submissions[0]
    expect(failed.status).toBe("failed")
    expect(failed.termination_reason).toBe("container_exited_with_error")
    expect(failed.exit_status).toBe(3)
    // The run stayed up (the other replica kept it running), and no replica was added beside the retried one.
    expect([...statuses]).toEqual(["running"])
    expect(after.jobs).toHaveLength(2)
    expect(after.jobs.map((j: any) => j.job_spec.replica_num).sort()).toEqual([0, 1])

    // The new process takes requests: the answers come from two replicas again, one of them new.
    const replicasAfter = await until("both replicas answer again", async () => {
      const seen = new Set<string>()
      for (let i = 0; i < 8; i++) {
        const res = await proxied("crashy", "/path")
        if (res.status === 200) seen.add(JSON.parse(await res.text()).replica)
      }
      return seen
    }, (seen) => seen.size === 2)
    const answers = await traffic.stop()
    // While the replica was down, every request was served by the other one.
    const failedAnswers = answers.filter((a) => a.status !== 200)
    expect(failedAnswers, JSON.stringify(failedAnswers.slice(0, 5))).toEqual([])
    expect(answers.length).toBeGreaterThan(0)
    expect(replicasAfter.size).toBe(2)
    expect((await getRun("crashy")).status).toBe("running")
  }, 180_000)

  it("with retry, the only replica of an autoscaled service: the run waits pending for the backoff, no replica is added meanwhile, then the replica is resubmitted", async () => {
    const scaling = { metric: "rps", target: 100, scale_up_delay: 0, scale_down_delay: 600 }
    await applyService(call, "lonely", { auth: false, replicas: "1..2", scaling, retry: { on_events: ["error"], duration: "1h" } })
    await waitRunning(call, "lonely", 1)
    await until("the replica answers", () => proxied("lonely", "/path").then((r) => r.status), (s) => s === 200)
    expect((await proxied("lonely", "/crash")).status).toBe(200)
    // As upstream: no replica left running, so the run goes back to pending and is resubmitted
    // after the first backoff (15 s). The autoscaler leaves a pending run to the engine.
    await until("the run pending", () => getRun("lonely"), (r) => r.status === "pending")
    // A request meanwhile is held until the resubmitted replica serves it.
    const held = proxied("lonely", "/path").then(async (r) => ({ status: r.status, text: await r.text() }))
    await new Promise((r) => setTimeout(r, 3_000))
    const waiting = await getRun("lonely")
    expect(waiting.status).toBe("pending")
    expect(waiting.jobs, JSON.stringify(waiting.jobs.map((j: any) => j.job_submissions.at(-1)))).toHaveLength(1)
    const answer = await held
    expect(answer.status, answer.text).toBe(200)
    const run = await getRun("lonely")
    expect(run.status).toBe("running")
    expect(run.jobs).toHaveLength(1)
    expect(run.jobs[0].job_submissions.map((s: any) => s.status)).toEqual(["failed", "running"])
  }, 120_000)

  it("without retry: the run fails with job_failed, as upstream's does, and the proxy says the service has finished", async () => {
    await applyService(call, "fragile", { auth: false, replicas: 2 })
    await waitRunning(call, "fragile", 2)
    await until("a replica answers", () => proxied("fragile", "/path").then((r) => r.status), (s) => s === 200)
    const crash = await proxied("fragile", "/crash")
    expect(crash.status).toBe(200)
    const run = await until("the run ended", () => getRun("fragile"), (r) => ["failed", "terminated", "done"].includes(r.status))
    expect(run.status).toBe("failed")
    expect(run.termination_reason).toBe("job_failed")
    const crashed = run.jobs.find((j: any) => j.job_submissions.at(-1).termination_reason === "container_exited_with_error")
    expect(crashed, JSON.stringify(run.jobs.map((j: any) => j.job_submissions.at(-1)))).toBeDefined()
    expect(run.jobs.every((j: any) => j.job_submissions.length === 1)).toBe(true)
    const res = await until("the proxy forgets the service", () => proxied("fragile", "/path").then(async (r) => ({ status: r.status, text: await r.text() })), (r) =>
      r.status === 404, 30_000)
    expect(res.text).toContain("does not exist in project main (or has finished)")
  }, 120_000)
})
