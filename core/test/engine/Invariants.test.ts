// Seeded random event sequences through jobs and their run: the lifecycles never throw, and
// the invariants between statuses and reasons hold after every step.
import { describe, expect, it } from "@effect/vitest"
import { latestSubmission } from "../../src/domain/Job.ts"
import { Run } from "../../src/domain/Run.ts"
import {
  isJobStatusFinished,
  isRunStatusFinished,
  jobStatusForTerminationReason,
  runStatusForTerminationReason
} from "../../src/domain/Status.ts"
import { JobEvent, transitionJob } from "../../src/engine/JobLifecycle.ts"
import { RunEvent, transitionRun } from "../../src/engine/RunLifecycle.ts"
import { makeJob, makeRun, provisioningData, SEC, T0 } from "./fixtures.ts"

// A small deterministic PRNG (mulberry32), so a failure names a reproducible seed.
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const jobEvents = (): ReadonlyArray<JobEvent> => [
  JobEvent.Claimed(),
  JobEvent.Provisioned({ provisioningData: provisioningData({ spot: true }), instanceId: "i" }),
  JobEvent.NoCapacity({}),
  JobEvent.ProvisioningFailed({ message: "provisioning failed: boom" }),
  JobEvent.RunnerStarting({}),
  JobEvent.RunnerStarting({ provisioningData: provisioningData() }),
  JobEvent.RunnerPulling(),
  JobEvent.RunnerRunning(),
  JobEvent.RunnerExited({ exitStatus: 0 }),
  JobEvent.RunnerExited({ exitStatus: 1 }),
  JobEvent.RunnerFailed({ reason: "executor_error" }),
  JobEvent.StopRequested({ abort: false }),
  JobEvent.StopRequested({ abort: true }),
  JobEvent.InstanceUnreachable({}),
  JobEvent.ProvisioningTimeout(),
  JobEvent.MaxDurationExceeded(),
  JobEvent.StopDurationExceeded()
]
const runEvents: ReadonlyArray<RunEvent> = [
  RunEvent.JobsChanged(),
  RunEvent.RetryDue(),
  RunEvent.StopRequested({ abort: false }),
  RunEvent.StopRequested({ abort: true }),
  RunEvent.ServerError({})
]

describe("random event sequences", () => {
  for (let seed = 1; seed <= 40; seed++) {
    it(`seed ${seed}`, () => {
      const random = prng(seed)
      const retry = { on_events: ["no-capacity", "interruption", "error"], duration: 600 }
      let run: Run = makeRun([
        makeJob({ replicaNum: 0, jobNum: 0, jobsPerReplica: 2, retry }),
        makeJob({ replicaNum: 0, jobNum: 1, jobsPerReplica: 2, retry }),
        makeJob({ replicaNum: 1, retry })
      ])
      let now = T0
      let finishedAs: string | null = null
      const events = jobEvents()
      for (let step = 0; step < 300; step++) {
        now += Math.floor(random() * 120) * SEC
        const roll = random()
        if (roll < 0.85) {
          const index = Math.floor(random() * run.jobs.length)
          const before = latestSubmission(run.jobs[index])!
          const result = transitionJob(run.jobs[index], events[Math.floor(random() * events.length)], now)
          const after = latestSubmission(result.entity)!
          if (isJobStatusFinished(before.status)) expect(after.status).toBe(before.status)
          if (isJobStatusFinished(after.status) && after.terminationReason !== undefined) {
            expect(after.status).toBe(jobStatusForTerminationReason(after.terminationReason))
          }
          if (after.status === "terminating") expect(after.terminationReason).toBeDefined()
          run = new Run({ ...run, jobs: run.jobs.map((job, i) => (i === index ? result.entity : job)) })
          run = transitionRun(run, RunEvent.JobsChanged(), now).entity
        } else {
          // Mostly retries and re-derivations; stops and server errors now and then.
          const event = roll < 0.98 ? runEvents[Math.floor(random() * 2)] : runEvents[2 + Math.floor(random() * 3)]
          run = transitionRun(run, event, now).entity
        }
        if (finishedAs !== null) expect(`${run.status}/${run.terminationReason}`).toBe(finishedAs)
        if (isRunStatusFinished(run.status)) {
          finishedAs ??= `${run.status}/${run.terminationReason}`
          expect(run.status).toBe(runStatusForTerminationReason(run.terminationReason!))
          // A finished run has no job left running.
          for (const job of run.jobs) expect(isJobStatusFinished(latestSubmission(job)!.status)).toBe(true)
        }
        if (run.status === "terminating") expect(run.terminationReason).toBeDefined()
        // Submission numbers grow by one, ids are unique.
        for (const job of run.jobs) {
          expect(job.jobSubmissions.map((s) => s.submissionNum)).toEqual(job.jobSubmissions.map((_, i) => i))
        }
        const ids = run.jobs.flatMap((job) => job.jobSubmissions.map((s) => s.id))
        expect(new Set(ids).size).toBe(ids.length)
      }
    })
  }
})
