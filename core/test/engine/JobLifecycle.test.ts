// Every job status × every job event, then the variants that depend on event data.
import { describe, expect, it } from "@effect/vitest"
import type { JobStatus, JobTerminationReason } from "../../src/domain/Status.ts"
import { JobStatusValues, retryEventForJobTerminationReason } from "../../src/domain/Status.ts"
import { Job, latestSubmission } from "../../src/domain/Job.ts"
import {
  JOB_EVENT_TAGS,
  JobEvent,
  maxDurationDeadline,
  provisioningDeadline,
  stopDeadline,
  transitionJob
} from "../../src/engine/JobLifecycle.ts"
import { HOUR, makeJob, MIN, provisioningData, SEC, T0 } from "./fixtures.ts"

const NOW = T0 + 5 * MIN

const sampleEvents: Record<JobEvent["_tag"], JobEvent> = {
  Claimed: JobEvent.Claimed(),
  ProvisioningPending: JobEvent.ProvisioningPending({ message: "Slurm PENDING (Resources)" }),
  Provisioned: JobEvent.Provisioned({ provisioningData: provisioningData(), instanceId: "inst-2" }),
  NoCapacity: JobEvent.NoCapacity({ message: "no offers" }),
  ProvisioningFailed: JobEvent.ProvisioningFailed({ message: "provisioning failed: TypeError: x is undefined" }),
  RunnerStarting: JobEvent.RunnerStarting({ provisioningData: provisioningData() }),
  RunnerPulling: JobEvent.RunnerPulling(),
  RunnerRunning: JobEvent.RunnerRunning(),
  RunnerExited: JobEvent.RunnerExited({ exitStatus: 0 }),
  RunnerFailed: JobEvent.RunnerFailed({ reason: "executor_error", message: "boom" }),
  StopRequested: JobEvent.StopRequested({ abort: false }),
  InstanceUnreachable: JobEvent.InstanceUnreachable({}),
  InstanceEnded: JobEvent.InstanceEnded({ reason: "interrupted_by_no_capacity", message: "Slurm PREEMPTED" }),
  ProvisioningTimeout: JobEvent.ProvisioningTimeout(),
  MaxDurationExceeded: JobEvent.MaxDurationExceeded(),
  StopDurationExceeded: JobEvent.StopDurationExceeded()
}

type Expected = readonly [JobStatus, JobTerminationReason | undefined, ReadonlyArray<string>] | "ignored"

const onInstance = (except: ReadonlyArray<JobEvent["_tag"]>): Partial<Record<JobEvent["_tag"], Expected>> => {
  const table: Partial<Record<JobEvent["_tag"], Expected>> = {
    RunnerStarting: ["pulling", undefined, []],
    RunnerPulling: ["pulling", undefined, []],
    RunnerRunning: ["running", undefined, []],
    RunnerExited: ["done", "done_by_runner", ["ReleaseInstance"]],
    RunnerFailed: ["failed", "executor_error", ["ReleaseInstance"]],
    StopRequested: ["terminating", "terminated_by_user", ["StopRunner"]],
    InstanceUnreachable: ["failed", "instance_unreachable", ["TerminateInstance"]],
    InstanceEnded: ["failed", "interrupted_by_no_capacity", ["TerminateInstance"]],
    ProvisioningTimeout: ["failed", "waiting_runner_limit_exceeded", ["TerminateInstance"]],
    MaxDurationExceeded: ["terminating", "max_duration_exceeded", ["StopRunner"]]
  }
  for (const tag of except) delete table[tag]
  return table
}

// Anything not listed for a status is ignored.
const documented: Record<JobStatus, Partial<Record<JobEvent["_tag"], Expected>>> = {
  submitted: {
    Claimed: ["submitted", undefined, ["ProvisionInstance"]],
    ProvisioningPending: ["provisioning", undefined, []],
    Provisioned: ["provisioning", undefined, ["SubmitToRunner"]],
    NoCapacity: ["failed", "failed_to_start_due_to_no_capacity", []],
    ProvisioningFailed: ["terminated", "terminated_by_server", []],
    StopRequested: ["terminated", "terminated_by_user", []],
    ProvisioningTimeout: ["failed", "waiting_instance_limit_exceeded", []]
  },
  provisioning: onInstance([]),
  pulling: onInstance(["RunnerPulling", "ProvisioningTimeout"]),
  running: onInstance(["RunnerStarting", "RunnerPulling", "RunnerRunning", "ProvisioningTimeout"]),
  terminating: {
    RunnerExited: ["terminated", "terminated_by_user", ["ReleaseInstance"]],
    RunnerFailed: ["terminated", "terminated_by_user", ["ReleaseInstance"]],
    InstanceUnreachable: ["terminated", "terminated_by_user", ["TerminateInstance"]],
    InstanceEnded: ["terminated", "terminated_by_user", ["TerminateInstance"]],
    StopDurationExceeded: ["terminated", "terminated_by_user", ["StopRunner", "ReleaseInstance"]]
  },
  terminated: { Provisioned: ["terminated", "terminated_by_user", ["ReleaseInstance"]] },
  aborted: { Provisioned: ["aborted", "aborted_by_user", ["ReleaseInstance"]] },
  failed: { Provisioned: ["failed", "executor_error", ["ReleaseInstance"]] },
  done: { Provisioned: ["done", "done_by_runner", ["ReleaseInstance"]] }
}

const reasonFor: Partial<Record<JobStatus, JobTerminationReason>> = {
  terminating: "terminated_by_user",
  terminated: "terminated_by_user",
  aborted: "aborted_by_user",
  failed: "executor_error",
  done: "done_by_runner"
}

describe("every job status × every job event", () => {
  for (const status of JobStatusValues) {
    for (const tag of JOB_EVENT_TAGS) {
      const expected = documented[status][tag] ?? "ignored"
      it(`${status} + ${tag} → ${expected === "ignored" ? "ignored" : expected.slice(0, 2).join(" ")}`, () => {
        const job = makeJob({ status, reason: reasonFor[status] })
        const result = transitionJob(job, sampleEvents[tag], NOW)
        if (expected === "ignored") {
          expect(result.ignored).toBe(true)
          expect(result.entity).toBe(job)
          expect(result.effects).toEqual([])
          expect(result._tag === "Ignored" && result.reason).toContain(tag)
          return
        }
        expect(result.ignored).toBe(false)
        const sub = latestSubmission(result.entity)!
        expect([sub.status, sub.terminationReason]).toEqual([expected[0], expected[1]])
        expect(result.effects.map((e) => e._tag)).toEqual(expected[2])
        if (sub !== latestSubmission(job)) {
          expect(sub.lastProcessedAt.getTime()).toBe(NOW)
          if (sub.status !== status && ["terminated", "aborted", "failed", "done"].includes(sub.status)) {
            expect(sub.finishedAt?.getTime()).toBe(NOW)
          }
        }
      })
    }
  }

  it("a job with no submission ignores everything", () => {
    const job = makeJob()
    const empty = new Job({ ...job, jobSubmissions: [] })
    for (const tag of JOB_EVENT_TAGS) {
      expect(transitionJob(empty, sampleEvents[tag], NOW).ignored).toBe(true)
    }
  })
})

describe("variants that depend on the event's data", () => {
  it("provisioning that broke ends the job by the server with the error, which is not a no-capacity ending", () => {
    const message = "provisioning failed: TypeError: x is undefined"
    const sub = latestSubmission(transitionJob(makeJob(), JobEvent.ProvisioningFailed({ message }), NOW).entity)!
    expect([sub.status, sub.terminationReason, sub.terminationReasonMessage]).toEqual(["terminated", "terminated_by_server", message])
    expect(retryEventForJobTerminationReason(sub.terminationReason!)).toBeNull()
  })

  it("a non-zero exit fails the job and records the exit status", () => {
    const result = transitionJob(makeJob({ status: "running" }), JobEvent.RunnerExited({ exitStatus: 3 }), NOW)
    const sub = latestSubmission(result.entity)!
    expect([sub.status, sub.terminationReason, sub.exitStatus]).toEqual(["failed", "container_exited_with_error", 3])
  })

  it("an exit while terminating keeps the stop reason and records the exit status", () => {
    const job = makeJob({ status: "terminating", reason: "max_duration_exceeded" })
    const sub = latestSubmission(transitionJob(job, JobEvent.RunnerExited({ exitStatus: 143 }), NOW).entity)!
    expect([sub.status, sub.terminationReason, sub.exitStatus]).toEqual(["terminated", "max_duration_exceeded", 143])
  })

  it("abort on an instance ends at once: aborted, runner killed, instance released", () => {
    const result = transitionJob(makeJob({ status: "running" }), JobEvent.StopRequested({ abort: true }), NOW)
    const sub = latestSubmission(result.entity)!
    expect([sub.status, sub.terminationReason]).toEqual(["aborted", "aborted_by_user"])
    expect(result.effects).toMatchObject([{ _tag: "StopRunner", abort: true }, { _tag: "ReleaseInstance", instanceId: "inst-1" }])
  })

  it("abort of a submitted job needs no runner", () => {
    const result = transitionJob(makeJob(), JobEvent.StopRequested({ abort: true }), NOW)
    expect(latestSubmission(result.entity)?.status).toBe("aborted")
    expect(result.effects).toEqual([])
  })

  it("abort while terminating overrides a user stop, but not a time limit", () => {
    const userStop = transitionJob(makeJob({ status: "terminating", reason: "terminated_by_user" }), JobEvent.StopRequested({ abort: true }), NOW)
    expect(latestSubmission(userStop.entity)?.status).toBe("aborted")
    expect(userStop.effects.map((e) => e._tag)).toEqual(["StopRunner", "ReleaseInstance"])
    const limit = transitionJob(makeJob({ status: "terminating", reason: "max_duration_exceeded" }), JobEvent.StopRequested({ abort: true }), NOW)
    expect(latestSubmission(limit.entity)?.terminationReason).toBe("max_duration_exceeded")
    expect(latestSubmission(limit.entity)?.status).toBe("terminated")
  })

  it("a stop by the server or a scale-down carries its reason", () => {
    const server = transitionJob(makeJob({ status: "running" }), JobEvent.StopRequested({ abort: false, reason: "terminated_by_server" }), NOW)
    expect(latestSubmission(server.entity)?.terminationReason).toBe("terminated_by_server")
    const scaled = transitionJob(makeJob(), JobEvent.StopRequested({ abort: false, reason: "scaled_down" }), NOW)
    expect([latestSubmission(scaled.entity)?.status, latestSubmission(scaled.entity)?.terminationReason]).toEqual(["terminated", "scaled_down"])
  })

  it("a spot instance that vanishes counts as an interruption", () => {
    const result = transitionJob(makeJob({ status: "running", spot: true }), JobEvent.InstanceUnreachable({}), NOW)
    expect(latestSubmission(result.entity)?.terminationReason).toBe("interrupted_by_no_capacity")
    expect(result.effects.map((e) => e._tag)).toEqual(["TerminateInstance"])
  })

  it("a job whose instance waits in its backend's queue is provisioning with the reason, and otherwise still a job being placed", () => {
    const pending = transitionJob(makeJob(), JobEvent.ProvisioningPending({ message: "Slurm PENDING (Resources)" }), NOW)
    const sub = latestSubmission(pending.entity)!
    expect([sub.status, sub.statusMessage, sub.jobProvisioningData]).toEqual(["provisioning", "Slurm PENDING (Resources)", undefined])
    expect(maxDurationDeadline(pending.entity)).toBeNull()
    expect(provisioningDeadline(pending.entity)).toBeNull()
    // The same reason again changes nothing; a new one is shown.
    expect(transitionJob(pending.entity, JobEvent.ProvisioningPending({ message: "Slurm PENDING (Resources)" }), NOW)._tag).toBe("Ignored")
    expect(latestSubmission(transitionJob(pending.entity, JobEvent.ProvisioningPending({ message: "Slurm PENDING (Priority)" }), NOW).entity)?.statusMessage).toBe("Slurm PENDING (Priority)")
    // Placed: its instance, the message gone; or ended as a submitted job would.
    const placed = transitionJob(pending.entity, JobEvent.Provisioned({ provisioningData: provisioningData(), instanceId: "i-1" }), NOW)
    expect(placed.effects.map((e) => e._tag)).toEqual(["SubmitToRunner"])
    expect(latestSubmission(placed.entity)?.statusMessage).toBeUndefined()
    const stopped = transitionJob(pending.entity, JobEvent.StopRequested({ abort: false }), NOW)
    expect([latestSubmission(stopped.entity)?.status, stopped.effects]).toEqual(["terminated", []])
    const timedOut = transitionJob(pending.entity, JobEvent.ProvisioningTimeout(), NOW)
    expect(latestSubmission(timedOut.entity)?.terminationReason).toBe("waiting_instance_limit_exceeded")
    expect(transitionJob(pending.entity, JobEvent.Claimed(), NOW).effects.map((e) => e._tag)).toEqual(["ProvisionInstance"])
  })

  it("an instance its backend says ended on its own ends the job with the backend's reason and words", () => {
    const timedOut = transitionJob(makeJob({ status: "running" }), JobEvent.InstanceEnded({ reason: "max_duration_exceeded", message: "Slurm TIMEOUT (TimeLimit)" }), NOW)
    const sub = latestSubmission(timedOut.entity)!
    expect([sub.status, sub.terminationReason, sub.terminationReasonMessage]).toEqual(["terminated", "max_duration_exceeded", "Slurm TIMEOUT (TimeLimit)"])
    expect(timedOut.effects.map((e) => e._tag)).toEqual(["TerminateInstance"])
    // A stop that decided the reason keeps it.
    const stopped = transitionJob(makeJob({ status: "terminating", reason: "terminated_by_user" }), JobEvent.InstanceEnded({ reason: "terminated_by_user", message: "Slurm CANCELLED" }), NOW)
    expect(latestSubmission(stopped.entity)?.terminationReason).toBe("terminated_by_user")
    expect(latestSubmission(stopped.entity)?.terminationReasonMessage).toBeUndefined()
  })

  it("a runner starting on its instance shows the job as pulling; the data its backend completed replaces the submission's", () => {
    const starting = transitionJob(makeJob({ status: "provisioning" }), JobEvent.RunnerStarting({}), NOW)
    const sub = latestSubmission(starting.entity)!
    expect([sub.status, starting.effects]).toEqual(["pulling", []])
    const before = sub.jobProvisioningData
    // Nothing new while pulling: nothing written.
    expect(transitionJob(starting.entity, JobEvent.RunnerStarting({}), NOW + SEC).ignored).toBe(true)
    const pd = provisioningData({ price: 9 })
    const completed = transitionJob(starting.entity, JobEvent.RunnerStarting({ provisioningData: pd }), NOW + SEC)
    expect(latestSubmission(completed.entity)?.jobProvisioningData).toBe(pd)
    expect(latestSubmission(completed.entity)?.jobProvisioningData).not.toBe(before)
    expect(latestSubmission(completed.entity)?.status).toBe("pulling")
    // A job being placed has no instance whose runner could start.
    expect(transitionJob(makeJob(), JobEvent.RunnerStarting({ provisioningData: pd }), NOW).ignored).toBe(true)
  })

  it("Provisioned records where the job landed and asks to submit it to that runner", () => {
    const pd = provisioningData({ price: 7 })
    const result = transitionJob(makeJob(), JobEvent.Provisioned({ provisioningData: pd, instanceId: "inst-9" }), NOW)
    const sub = latestSubmission(result.entity)!
    expect(sub.jobProvisioningData).toBe(pd)
    expect(sub.instanceId).toBe("inst-9")
    expect(result.effects).toEqual([{ _tag: "SubmitToRunner", jobSubmissionId: sub.id, provisioningData: pd }])
  })

  it("an instance that arrives after the job was stopped goes back", () => {
    const stopped = transitionJob(makeJob(), JobEvent.StopRequested({ abort: false }), NOW).entity
    const late = transitionJob(stopped, JobEvent.Provisioned({ provisioningData: provisioningData(), instanceId: "inst-7" }), NOW + SEC)
    expect(late.entity).toBe(stopped)
    expect(late.effects).toMatchObject([{ _tag: "ReleaseInstance", instanceId: "inst-7" }])
  })

  it("the previous submissions are kept untouched", () => {
    const job = makeJob({
      status: "running",
      history: [{ id: "old", submission_num: 0, submitted_at: new Date(T0 - HOUR).toISOString(), last_processed_at: new Date(T0 - HOUR).toISOString(), status: "failed", termination_reason: "executor_error" }]
    })
    const next = transitionJob(job, JobEvent.RunnerExited({ exitStatus: 0 }), NOW).entity
    expect(next.jobSubmissions).toHaveLength(2)
    expect(next.jobSubmissions[0]).toBe(job.jobSubmissions[0])
    expect(latestSubmission(next)?.status).toBe("done")
  })
})

describe("deadlines", () => {
  it("max_duration counts from the submission while on an instance", () => {
    expect(maxDurationDeadline(makeJob({ status: "running", maxDuration: 3600 }))).toBe(T0 + HOUR)
    expect(maxDurationDeadline(makeJob({ status: "running" }))).toBeNull()
    expect(maxDurationDeadline(makeJob({ status: "submitted", maxDuration: 3600 }))).toBeNull()
  })

  it("a graceful stop turns forced after stop_duration", () => {
    const terminating = transitionJob(makeJob({ status: "running" }), JobEvent.StopRequested({ abort: false }), NOW).entity
    expect(stopDeadline(terminating)).toBe(NOW + 300 * SEC)
    expect(stopDeadline(makeJob({ status: "running" }))).toBeNull()
  })

  it("provisioning gives up on the runner after 10 minutes by default", () => {
    const provisioning = transitionJob(makeJob(), sampleEvents.Provisioned, NOW).entity
    expect(provisioningDeadline(provisioning)).toBe(NOW + 10 * MIN)
    expect(provisioningDeadline(provisioning, MIN)).toBe(NOW + MIN)
    expect(provisioningDeadline(makeJob({ status: "running" }))).toBeNull()
  })
})
