// Every run status × every run event, then whole scenarios driving jobs and the run together.
import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { Job, JobSubmission, latestSubmission } from "../../src/domain/Job.ts"
import { jobSpecsFromRunSpec } from "../../src/domain/RunJobSpecs.ts"
import { Run, RunSpec } from "../../src/domain/Run.ts"
import type { RunStatus, RunTerminationReason } from "../../src/domain/Status.ts"
import { RunStatusValues } from "../../src/domain/Status.ts"
import { JobEffect, JobEvent, transitionJob } from "../../src/engine/JobLifecycle.ts"
import {
  RETRY_BACKOFF_MS,
  retryBackoffMs,
  RUN_EVENT_TAGS,
  RunEffect,
  RunEvent,
  transitionRun,
  retryVerdict
} from "../../src/engine/RunLifecycle.ts"
import { HOUR, makeJob, makeRun, MIN, provisioningData, SEC, T0 } from "./fixtures.ts"

const NOW = T0 + MIN

const sampleEvents: Record<RunEvent["_tag"], RunEvent> = {
  JobsChanged: RunEvent.JobsChanged(),
  StopRequested: RunEvent.StopRequested({ abort: false }),
  RetryDue: RunEvent.RetryDue(),
  ServerError: RunEvent.ServerError({ message: "database gone" })
}

const retryAll = { on_events: ["no-capacity", "interruption", "error"], duration: 3600 }

const runIn = (status: RunStatus): Run => {
  switch (status) {
    case "pending":
      return makeRun([makeJob({ status: "failed", reason: "failed_to_start_due_to_no_capacity", retry: retryAll, provisioned: false })], { status })
    case "submitted":
      return makeRun([makeJob()], { status })
    case "provisioning":
      return makeRun([makeJob({ status: "provisioning" })], { status })
    case "running":
      return makeRun([makeJob({ status: "running" })], { status })
    case "terminating":
      return makeRun([makeJob({ status: "terminating", reason: "terminated_by_user" })], { status, reason: "stopped_by_user" })
    case "terminated":
      return makeRun([makeJob({ status: "terminated", reason: "terminated_by_user" })], { status, reason: "stopped_by_user" })
    case "failed":
      return makeRun([makeJob({ status: "failed", reason: "executor_error" })], { status, reason: "job_failed" })
    case "done":
      return makeRun([makeJob({ status: "done", reason: "done_by_runner" })], { status, reason: "all_jobs_done" })
  }
}

type Expected = readonly [RunStatus, RunTerminationReason | undefined, ReadonlyArray<string>] | "ignored"

const active = (status: RunStatus): Partial<Record<RunEvent["_tag"], Expected>> => ({
  JobsChanged: [status, undefined, []],
  StopRequested: ["terminating", "stopped_by_user", ["StopJob"]],
  ServerError: ["terminating", "server_error", ["StopJob"]]
})

const documented: Record<RunStatus, Partial<Record<RunEvent["_tag"], Expected>>> = {
  pending: {
    JobsChanged: ["pending", undefined, []],
    StopRequested: ["terminated", "stopped_by_user", []],
    RetryDue: ["submitted", undefined, ["JobSubmitted"]],
    ServerError: ["failed", "server_error", []]
  },
  submitted: active("submitted"),
  provisioning: active("provisioning"),
  running: active("running"),
  terminating: { JobsChanged: ["terminating", "stopped_by_user", []] },
  terminated: {},
  failed: {},
  done: {}
}

describe("every run status × every run event", () => {
  for (const status of RunStatusValues) {
    for (const tag of RUN_EVENT_TAGS) {
      const expected = documented[status][tag] ?? "ignored"
      it(`${status} + ${tag} → ${expected === "ignored" ? "ignored" : expected.slice(0, 2).join(" ")}`, () => {
        const run = runIn(status)
        const result = transitionRun(run, sampleEvents[tag], NOW)
        if (expected === "ignored") {
          expect(result.ignored).toBe(true)
          expect(result.entity).toBe(run)
          expect(result.effects).toEqual([])
          return
        }
        expect(result.ignored).toBe(false)
        expect([result.entity.status, result.entity.terminationReason]).toEqual([expected[0], expected[1]])
        expect(result.effects.map((e) => e._tag)).toEqual(expected[2])
        expect(result.entity.lastProcessedAt.getTime()).toBe(NOW)
      })
    }
  }
})

// ---------------------------------------------------------------------------------------------
// A tiny driver: a job event, then the run re-derives; run effects StopJob are fed back.

interface World {
  run: Run
  jobEffects: Array<JobEffect>
  runEffects: Array<RunEffect>
}

const world = (run: Run): World => ({ run, jobEffects: [], runEffects: [] })

const replaceJob = (run: Run, index: number, job: Job): Run =>
  new Run({ ...run, jobs: run.jobs.map((j, i) => (i === index ? job : j)) })

const runEvent = (w: World, event: RunEvent, now: number): void => {
  const result = transitionRun(w.run, event, now)
  w.run = result.entity
  w.runEffects.push(...result.effects)
  for (const effect of result.effects) {
    if (effect._tag !== "StopJob") continue
    const index = w.run.jobs.findIndex((job) => latestSubmission(job)?.id === effect.jobSubmissionId)
    jobEvent(w, index, JobEvent.StopRequested({ abort: effect.abort, reason: effect.reason }), now)
  }
}

const jobEvent = (w: World, index: number, event: JobEvent, now: number): void => {
  const result = transitionJob(w.run.jobs[index], event, now)
  expect(result.ignored, `${event._tag} on job ${index}`).toBe(false)
  w.run = replaceJob(w.run, index, result.entity)
  w.jobEffects.push(...result.effects)
  runEvent(w, RunEvent.JobsChanged(), now)
}

const tags = (effects: ReadonlyArray<{ readonly _tag: string }>) => effects.map((e) => e._tag)
const sub = (w: World, index = 0) => latestSubmission(w.run.jobs[index])!

describe("scenarios", () => {
  it("happy path: submitted → provisioning → running → done, with cost", () => {
    const w = world(makeRun([makeJob()]))
    jobEvent(w, 0, JobEvent.Claimed(), T0 + SEC)
    expect(w.run.status).toBe("submitted")
    jobEvent(w, 0, JobEvent.Provisioned({ provisioningData: provisioningData({ price: 2 }), instanceId: "inst-1" }), T0 + 2 * SEC)
    expect(w.run.status).toBe("provisioning")
    jobEvent(w, 0, JobEvent.RunnerPulling(), T0 + 3 * SEC)
    expect(w.run.status).toBe("provisioning")
    jobEvent(w, 0, JobEvent.RunnerRunning(), T0 + 4 * SEC)
    expect(w.run.status).toBe("running")
    jobEvent(w, 0, JobEvent.RunnerExited({ exitStatus: 0 }), T0 + 30 * MIN)
    expect([w.run.status, w.run.terminationReason]).toEqual(["done", "all_jobs_done"])
    expect(tags(w.jobEffects)).toEqual(["ProvisionInstance", "SubmitToRunner", "ReleaseInstance"])
    expect(w.runEffects).toEqual([])
    expect(w.run.cost).toBeCloseTo(1, 5) // 2 $/h for half an hour
    expect(w.run.latestJobSubmission?.status).toBe("done")
    // A finished run ignores what comes after.
    expect(transitionRun(w.run, RunEvent.StopRequested({ abort: true }), T0 + HOUR).ignored).toBe(true)
  })

  it("failure without retry: the run fails with job_failed", () => {
    const w = world(makeRun([makeJob({ status: "running" })], { status: "running" }))
    jobEvent(w, 0, JobEvent.RunnerExited({ exitStatus: 1 }), NOW)
    expect([w.run.status, w.run.terminationReason]).toEqual(["failed", "job_failed"])
    expect(w.runEffects).toEqual([])
  })

  it("failure not covered by on_events is not retried", () => {
    const w = world(makeRun([makeJob({ status: "running", retry: { on_events: ["no-capacity"] } })], { status: "running" }))
    jobEvent(w, 0, JobEvent.RunnerFailed({ reason: "executor_error" }), NOW)
    expect([w.run.status, w.run.terminationReason]).toEqual(["failed", "job_failed"])
  })

  it("failure with retry: pending, backoff grows 15s, 30s, 1m, 2m, 5m, 10m, 10m, each retry a new submission", () => {
    const w = world(makeRun([makeJob({ status: "running", retry: { on_events: ["error"], duration: 3600 } })], { status: "running" }))
    let now = NOW
    const delays: Array<number> = []
    for (let attempt = 0; attempt < 7; attempt++) {
      // Each attempt reaches an instance, so the retry duration counts from that attempt.
      if (attempt > 0) {
        jobEvent(w, 0, JobEvent.Claimed(), now)
        jobEvent(w, 0, JobEvent.Provisioned({ provisioningData: provisioningData() }), now)
        jobEvent(w, 0, JobEvent.RunnerRunning(), now)
      }
      now += MIN
      w.runEffects = []
      jobEvent(w, 0, JobEvent.RunnerExited({ exitStatus: 2 }), now)
      expect(w.run.status).toBe("pending")
      const resubmit = w.runEffects.find((e) => e._tag === "Resubmit")!
      expect(resubmit).toBeDefined()
      if (resubmit._tag === "Resubmit") {
        delays.push(resubmit.delayMs)
        expect(resubmit.at).toBe(now + resubmit.delayMs)
        now = resubmit.at
      }
      runEvent(w, RunEvent.RetryDue(), now)
      expect(w.run.status).toBe("submitted")
      expect(sub(w).submissionNum).toBe(attempt + 1)
      expect(sub(w).status).toBe("submitted")
    }
    expect(delays).toEqual([...RETRY_BACKOFF_MS, 600_000])
    expect(w.run.jobs[0].jobSubmissions).toHaveLength(8)
    expect(tags(w.runEffects).filter((t) => t === "JobSubmitted")).toHaveLength(1)
  })

  it("no capacity until the retry duration passes, counted from the run's submission", () => {
    const w = world(makeRun([makeJob({ retry: { on_events: ["no-capacity"], duration: 3600 } })]))
    let now = T0
    let rounds = 0
    for (;;) {
      jobEvent(w, 0, JobEvent.Claimed(), now)
      jobEvent(w, 0, JobEvent.NoCapacity({}), now + SEC)
      if (w.run.status !== "pending") break
      const resubmit = w.runEffects.filter((e) => e._tag === "Resubmit").at(-1)!
      now = (resubmit as { at: number }).at
      runEvent(w, RunEvent.RetryDue(), now)
      if ((w.run.status as string) !== "submitted") break
      rounds++
      expect(rounds).toBeLessThan(50)
    }
    expect([w.run.status, w.run.terminationReason]).toEqual(["failed", "retry_limit_exceeded"])
    // The last attempt failed within the hour; the retry due after it found the hour over.
    expect(sub(w).lastProcessedAt.getTime() - T0).toBeLessThan(HOUR)
    expect(w.run.lastProcessedAt.getTime() - T0).toBeGreaterThan(HOUR)
    expect(w.run.lastProcessedAt.getTime() - T0).toBeLessThan(HOUR + 11 * MIN)
    expect(rounds).toBeGreaterThan(6)
  })

  it("a retry due after the duration ran out fails the run instead of resubmitting", () => {
    const run = makeRun([makeJob({ status: "failed", reason: "failed_to_start_due_to_no_capacity", retry: retryAll, lastProcessedAt: T0 + 59 * MIN, provisioned: false })], { status: "pending" })
    const result = transitionRun(run, RunEvent.RetryDue(), T0 + HOUR + SEC)
    expect([result.entity.status, result.entity.terminationReason]).toEqual(["failed", "retry_limit_exceeded"])
    expect(result.entity.jobs[0].jobSubmissions).toHaveLength(1)
  })

  it("after an instance was reached, the retry duration counts from that attempt, not from submission", () => {
    const job = makeJob({ status: "failed", reason: "interrupted_by_no_capacity", retry: { on_events: ["interruption"], duration: 3600 }, lastProcessedAt: T0 + 3 * HOUR, spot: true })
    const run = makeRun([job], { status: "running" })
    expect(retryVerdict(run, job, T0 + 3 * HOUR + 30 * MIN)).toBe("retry")
    expect(retryVerdict(run, job, T0 + 4 * HOUR + SEC)).toBe("limit-exceeded")
    const result = transitionRun(run, RunEvent.JobsChanged(), T0 + 3 * HOUR + MIN)
    expect(result.entity.status).toBe("pending")
  })

  it("a spot interruption on a running job is retried as an interruption", () => {
    const w = world(makeRun([makeJob({ status: "running", spot: true, retry: { on_events: ["interruption"] } })], { status: "running" }))
    jobEvent(w, 0, JobEvent.InstanceUnreachable({}), NOW)
    expect(sub(w).terminationReason).toBe("interrupted_by_no_capacity")
    expect(w.run.status).toBe("pending")
    expect(tags(w.jobEffects)).toEqual(["TerminateInstance"])
  })

  it("stop: terminating, graceful runner stop, then terminated with stopped_by_user", () => {
    const w = world(makeRun([makeJob({ status: "running" })], { status: "running" }))
    runEvent(w, RunEvent.StopRequested({ abort: false }), NOW)
    expect([w.run.status, w.run.terminationReason]).toEqual(["terminating", "stopped_by_user"])
    expect(w.runEffects).toMatchObject([{ _tag: "StopJob", abort: false, reason: "terminated_by_user" }])
    expect(sub(w).status).toBe("terminating")
    expect(w.jobEffects).toMatchObject([{ _tag: "StopRunner", abort: false }])
    // A second graceful stop changes nothing.
    expect(transitionRun(w.run, RunEvent.StopRequested({ abort: false }), NOW + SEC).ignored).toBe(true)
    jobEvent(w, 0, JobEvent.RunnerExited({ exitStatus: 143 }), NOW + 5 * SEC)
    expect([sub(w).status, sub(w).terminationReason]).toEqual(["terminated", "terminated_by_user"])
    expect([w.run.status, w.run.terminationReason]).toEqual(["terminated", "stopped_by_user"])
  })

  it("abort: jobs killed at once, run terminated with aborted_by_user", () => {
    const w = world(makeRun([makeJob({ status: "running" }), makeJob({ status: "running", jobNum: 1 })], { status: "running" }))
    runEvent(w, RunEvent.StopRequested({ abort: true }), NOW)
    expect([w.run.status, w.run.terminationReason]).toEqual(["terminated", "aborted_by_user"])
    expect(w.run.jobs.map((job) => latestSubmission(job)?.status)).toEqual(["aborted", "aborted"])
    expect(tags(w.jobEffects)).toEqual(["StopRunner", "ReleaseInstance", "StopRunner", "ReleaseInstance"])
  })

  it("stop then abort: the abort takes over the graceful stop", () => {
    const w = world(makeRun([makeJob({ status: "running" })], { status: "running" }))
    runEvent(w, RunEvent.StopRequested({ abort: false }), NOW)
    runEvent(w, RunEvent.StopRequested({ abort: true }), NOW + SEC)
    expect([w.run.status, w.run.terminationReason]).toEqual(["terminated", "aborted_by_user"])
    expect(sub(w).status).toBe("aborted")
  })

  it("a graceful stop the runner ignores is forced after stop_duration", () => {
    const w = world(makeRun([makeJob({ status: "running" })], { status: "running" }))
    runEvent(w, RunEvent.StopRequested({ abort: false }), NOW)
    jobEvent(w, 0, JobEvent.StopDurationExceeded(), NOW + 300 * SEC)
    expect(tags(w.jobEffects)).toEqual(["StopRunner", "StopRunner", "ReleaseInstance"])
    expect([w.run.status, w.run.terminationReason]).toEqual(["terminated", "stopped_by_user"])
  })

  it("max_duration: the job is stopped, ends terminated, and the run fails", () => {
    const w = world(makeRun([makeJob({ status: "running", maxDuration: 3600, retry: retryAll })], { status: "running" }))
    jobEvent(w, 0, JobEvent.MaxDurationExceeded(), T0 + HOUR)
    expect([sub(w).status, sub(w).terminationReason]).toEqual(["terminating", "max_duration_exceeded"])
    // The job is terminating for a reason that is not a retry event: the run ends and waits for it.
    expect([w.run.status, w.run.terminationReason]).toEqual(["terminating", "job_failed"])
    jobEvent(w, 0, JobEvent.RunnerExited({ exitStatus: 137 }), T0 + HOUR + 10 * SEC)
    expect([sub(w).status, sub(w).terminationReason]).toEqual(["terminated", "max_duration_exceeded"])
    expect([w.run.status, w.run.terminationReason]).toEqual(["failed", "job_failed"])
  })

  it("a failed node of a multi-node task stops its siblings with terminated_by_server and fails the run", () => {
    const w = world(makeRun([
      makeJob({ status: "running", jobsPerReplica: 2 }),
      makeJob({ status: "running", jobNum: 1, jobsPerReplica: 2 })
    ], { status: "running" }))
    jobEvent(w, 1, JobEvent.RunnerExited({ exitStatus: 1 }), NOW)
    expect([w.run.status, w.run.terminationReason]).toEqual(["terminating", "job_failed"])
    expect(w.runEffects).toMatchObject([{ _tag: "StopJob", reason: "terminated_by_server", abort: false }])
    expect(sub(w, 0).status).toBe("terminating")
    jobEvent(w, 0, JobEvent.RunnerExited({ exitStatus: 143 }), NOW + SEC)
    expect([w.run.status, w.run.terminationReason]).toEqual(["failed", "job_failed"])
  })

  it("a retried node restarts its whole replica once the siblings stopped", () => {
    const retry = { on_events: ["error"] }
    const w = world(makeRun([
      makeJob({ status: "running", jobsPerReplica: 2, retry }),
      makeJob({ status: "running", jobNum: 1, jobsPerReplica: 2, retry })
    ], { status: "running" }))
    jobEvent(w, 1, JobEvent.RunnerFailed({ reason: "executor_error" }), NOW)
    expect(w.run.status).toBe("pending")
    expect(tags(w.runEffects)).toEqual(["StopJob", "Resubmit"])
    expect(sub(w, 0).status).toBe("terminating")
    // Too early: the sibling still stops, so the run looks again a little later.
    w.runEffects = []
    runEvent(w, RunEvent.RetryDue(), NOW + 15 * SEC)
    expect(w.run.status).toBe("pending")
    expect(tags(w.runEffects)).toEqual(["Resubmit"])
    jobEvent(w, 0, JobEvent.RunnerExited({ exitStatus: 143 }), NOW + 16 * SEC)
    expect(w.run.status).toBe("pending") // the sibling stopped by the server does not fail the run
    w.runEffects = []
    runEvent(w, RunEvent.RetryDue(), NOW + 20 * SEC)
    expect(w.run.status).toBe("submitted")
    expect(w.runEffects).toMatchObject([
      { _tag: "JobSubmitted", replicaNum: 0, jobNum: 0 },
      { _tag: "JobSubmitted", replicaNum: 0, jobNum: 1 }
    ])
    expect(w.run.jobs.map((job) => latestSubmission(job)?.submissionNum)).toEqual([1, 1])
  })

  it("a replica to retry while other replicas run restarts at once, and the run stays running", () => {
    const retry = { on_events: ["error"] }
    const w = world(makeRun([
      makeJob({ status: "running", replicaNum: 0, retry }),
      makeJob({ status: "running", replicaNum: 1, retry })
    ], { status: "running" }))
    jobEvent(w, 1, JobEvent.RunnerExited({ exitStatus: 1 }), NOW)
    expect(w.run.status).toBe("running")
    expect(w.runEffects).toMatchObject([{ _tag: "JobSubmitted", replicaNum: 1, jobNum: 0 }])
    expect([sub(w, 1).submissionNum, sub(w, 1).status]).toEqual([1, "submitted"])
    expect(sub(w, 0).submissionNum).toBe(0)
  })

  it("a service's replica retried restarts on the run's current spec and deployment; a task's keeps its spec", () => {
    const retry = { on_events: ["error"] }
    const serviceSpec = (command: string) => ({
      run_name: "web",
      repo_id: "repo-1",
      repo_data: { repo_type: "virtual" },
      configuration: { type: "service", port: 8000, commands: [command], replicas: 2, retry }
    })
    // Deployment 1 runs `serve --v2`; replica 1 still runs deployment 0's `serve --v1`.
    const current = jobSpecsFromRunSpec(Schema.decodeUnknownSync(RunSpec)(serviceSpec("serve --v2")))
    const old = jobSpecsFromRunSpec(Schema.decodeUnknownSync(RunSpec)(serviceSpec("serve --v1")))
    const base = makeRun([makeJob({ status: "running", replicaNum: 0, retry }), makeJob({ status: "running", replicaNum: 1, retry })], { status: "running" })
    const withSpec = (job: Job, spec: typeof current[number], deploymentNum: number) =>
      new Job({ jobSpec: spec, jobSubmissions: job.jobSubmissions.map((s) => new JobSubmission({ ...s, deploymentNum })) })
    const service = new Run({
      ...base,
      runSpec: Schema.decodeUnknownSync(RunSpec)(serviceSpec("serve --v2")),
      deploymentNum: 1,
      jobs: [withSpec(base.jobs[0], current[0], 1), withSpec(base.jobs[1], old[1], 0)]
    })
    const w = world(service)
    jobEvent(w, 1, JobEvent.RunnerExited({ exitStatus: 1 }), NOW)
    expect(w.runEffects).toMatchObject([{ _tag: "JobSubmitted", replicaNum: 1, jobNum: 0 }])
    expect(w.run.jobs[1].jobSpec.commands).toEqual(current[1].commands)
    expect(w.run.jobs[1].jobSpec.jobName).toBe(old[1].jobName)
    expect([sub(w, 1).submissionNum, sub(w, 1).deploymentNum]).toEqual([1, 1])
    // A task's replica is retried on the job spec it had.
    const task = world(makeRun([makeJob({ status: "running", replicaNum: 0, retry }), makeJob({ status: "running", replicaNum: 1, retry })], { status: "running" }))
    const before = task.run.jobs[1].jobSpec
    jobEvent(task, 1, JobEvent.RunnerExited({ exitStatus: 1 }), NOW)
    expect(task.run.jobs[1].jobSpec).toBe(before)
  })

  it("a replica to retry after the other replicas finished waits with backoff in pending", () => {
    const retry = { on_events: ["error"] }
    const w = world(makeRun([
      makeJob({ status: "done", reason: "done_by_runner", replicaNum: 0, retry }),
      makeJob({ status: "running", replicaNum: 1, retry })
    ], { status: "running" }))
    jobEvent(w, 1, JobEvent.RunnerExited({ exitStatus: 1 }), NOW)
    expect(w.run.status).toBe("pending")
    expect(w.runEffects).toMatchObject([{ _tag: "Resubmit", delayMs: 15_000 }])
    runEvent(w, RunEvent.RetryDue(), NOW + 15 * SEC)
    expect(w.run.jobs.map((job) => latestSubmission(job)?.submissionNum)).toEqual([0, 1])
    jobEvent(w, 1, JobEvent.Claimed(), NOW + 16 * SEC)
    jobEvent(w, 1, JobEvent.Provisioned({ provisioningData: provisioningData() }), NOW + 17 * SEC)
    jobEvent(w, 1, JobEvent.RunnerRunning(), NOW + 18 * SEC)
    jobEvent(w, 1, JobEvent.RunnerExited({ exitStatus: 0 }), NOW + 19 * SEC)
    expect([w.run.status, w.run.terminationReason]).toEqual(["done", "all_jobs_done"])
  })

  it("a server error ends the run as failed after its jobs stop", () => {
    const w = world(makeRun([makeJob({ status: "running" })], { status: "running" }))
    runEvent(w, RunEvent.ServerError({}), NOW)
    expect([w.run.status, w.run.terminationReason]).toEqual(["terminating", "server_error"])
    jobEvent(w, 0, JobEvent.RunnerExited({ exitStatus: 143 }), NOW + SEC)
    expect([w.run.status, w.run.terminationReason]).toEqual(["failed", "server_error"])
  })

  it("new submission ids come from the caller when given", () => {
    const run = runIn("pending")
    const result = transitionRun(run, RunEvent.RetryDue(), NOW, { newSubmissionId: (job, n) => `${job.jobSpec.jobName}#${n}` })
    expect(sub({ run: result.entity } as World).id).toBe("train-0-0#1")
  })

  it("backoff helper clamps its attempt", () => {
    expect(retryBackoffMs(-3)).toBe(15_000)
    expect(retryBackoffMs(2)).toBe(60_000)
    expect(retryBackoffMs(99)).toBe(600_000)
  })
})
