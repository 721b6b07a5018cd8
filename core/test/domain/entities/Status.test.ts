// Every literal of every status and reason enum, through every mapping.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import {
  InstanceStatusValues,
  isInstanceStatusFinished,
  isJobStatusFinished,
  isRunStatusFinished,
  JobStatus,
  JobStatusValues,
  jobStatusForTerminationReason,
  JobTerminationReason,
  JobTerminationReasonValues,
  LegacyRunStatusValues,
  retryEventForJobTerminationReason,
  RunStatus,
  RunStatusFromAny,
  runStatusForTerminationReason,
  runStatusFromLegacy,
  RunStatusValues,
  RunTerminationReasonValues,
  runTerminationReasonForJobs,
  runTerminationReasonFromLegacy
} from "../../../src/domain/Status.ts"

describe("enums", () => {
  it("keep the upstream values", () => {
    expect(RunStatusValues).toEqual([
      "pending", "submitted", "provisioning", "running", "terminating", "terminated", "failed", "done"
    ])
    expect(JobStatusValues).toEqual([
      "submitted", "provisioning", "pulling", "running", "terminating", "terminated", "aborted", "failed", "done"
    ])
    expect(InstanceStatusValues).toEqual(["pending", "provisioning", "idle", "busy", "terminating", "terminated"])
    expect([...RunTerminationReasonValues].sort()).toEqual(
      ["aborted_by_user", "all_jobs_done", "job_failed", "retry_limit_exceeded", "server_error", "stopped_by_user"]
    )
    expect(JobTerminationReasonValues).toHaveLength(17)
    expect(LegacyRunStatusValues).toHaveLength(15)
  })

  it.effect("reject unknown values with a message naming the expected ones", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Schema.decodeUnknown(JobTerminationReason)("gone_fishing"))
      expect(String(error)).toContain("done_by_runner")
      const status = yield* Effect.flip(Schema.decodeUnknown(RunStatus)("RUNNING"))
      expect(String(status)).toContain("running")
    }))
})

describe("runStatusForTerminationReason", () => {
  const expected = {
    all_jobs_done: "done",
    job_failed: "failed",
    retry_limit_exceeded: "failed",
    server_error: "failed",
    stopped_by_user: "terminated",
    aborted_by_user: "terminated"
  } as const
  for (const reason of RunTerminationReasonValues) {
    it(`${reason} → ${expected[reason]}`, () => {
      const status = runStatusForTerminationReason(reason)
      expect(status).toBe(expected[reason])
      expect(isRunStatusFinished(status)).toBe(true)
    })
  }
})

describe("jobStatusForTerminationReason and retry events", () => {
  const expected: Record<JobTerminationReason, [JobStatus, string | null]> = {
    failed_to_start_due_to_no_capacity: ["failed", "no-capacity"],
    interrupted_by_no_capacity: ["failed", "interruption"],
    instance_unreachable: ["failed", "error"],
    waiting_instance_limit_exceeded: ["failed", "error"],
    waiting_runner_limit_exceeded: ["failed", "error"],
    terminated_by_user: ["terminated", null],
    scaled_down: ["terminated", null],
    done_by_runner: ["done", null],
    aborted_by_user: ["aborted", null],
    terminated_by_server: ["terminated", null],
    inactivity_duration_exceeded: ["terminated", null],
    container_exited_with_error: ["failed", "error"],
    ports_binding_failed: ["failed", "error"],
    creating_container_error: ["failed", "error"],
    executor_error: ["failed", "error"],
    max_duration_exceeded: ["terminated", null],
    log_quota_exceeded: ["failed", "error"]
  }
  it("the table covers every reason", () => {
    expect(Object.keys(expected).sort()).toEqual([...JobTerminationReasonValues].sort())
  })
  for (const reason of JobTerminationReasonValues) {
    it(`${reason} → ${expected[reason][0]}, retry event ${expected[reason][1]}`, () => {
      const status = jobStatusForTerminationReason(reason)
      expect(status).toBe(expected[reason][0])
      expect(isJobStatusFinished(status)).toBe(true)
      expect(retryEventForJobTerminationReason(reason)).toBe(expected[reason][1])
    })
  }
})

describe("isFinished", () => {
  it("runs", () => {
    expect(RunStatusValues.filter(isRunStatusFinished)).toEqual(["terminated", "failed", "done"])
  })
  it("jobs", () => {
    expect(JobStatusValues.filter(isJobStatusFinished)).toEqual(["terminated", "aborted", "failed", "done"])
  })
  it("instances", () => {
    expect(InstanceStatusValues.filter(isInstanceStatusFinished)).toEqual(["terminated"])
  })
})

describe("runTerminationReasonForJobs", () => {
  it("no jobs or active jobs: the run goes on", () => {
    expect(runTerminationReasonForJobs([])).toBeNull()
    expect(runTerminationReasonForJobs([{ status: "done" }, { status: "running" }])).toBeNull()
  })
  it("all done → all_jobs_done", () => {
    expect(runTerminationReasonForJobs([{ status: "done" }, { status: "done" }])).toBe("all_jobs_done")
  })
  it("scaled-down replicas beside done ones still make the run done, alone they do not", () => {
    const scaled = { status: "terminated", terminationReason: "scaled_down" } as const
    expect(runTerminationReasonForJobs([{ status: "done" }, scaled])).toBe("all_jobs_done")
    expect(runTerminationReasonForJobs([scaled])).toBeNull()
  })
  it("a failed job fails the run even while others run", () => {
    expect(runTerminationReasonForJobs([{ status: "running" }, { status: "failed", terminationReason: "executor_error" }]))
      .toBe("job_failed")
  })
  it("a job terminated or aborted behind the run's back fails it", () => {
    expect(runTerminationReasonForJobs([{ status: "terminated", terminationReason: "max_duration_exceeded" }]))
      .toBe("job_failed")
    expect(runTerminationReasonForJobs([{ status: "aborted", terminationReason: "aborted_by_user" }]))
      .toBe("job_failed")
    expect(runTerminationReasonForJobs([{ status: "terminating", terminationReason: "terminated_by_server" }]))
      .toBe("job_failed")
  })
  it("retry_limit_exceeded only when every failed job ran out of retry time", () => {
    const outOfTime = { status: "failed", terminationReason: "failed_to_start_due_to_no_capacity", retryLimitExceeded: true } as const
    expect(runTerminationReasonForJobs([outOfTime, { status: "done" }])).toBe("retry_limit_exceeded")
    expect(runTerminationReasonForJobs([outOfTime, { status: "failed", terminationReason: "executor_error" }]))
      .toBe("job_failed")
  })
  it("every single job status on its own", () => {
    for (const status of JobStatusValues) {
      const reason = runTerminationReasonForJobs([{ status }])
      expect(reason).toBe(status === "done" ? "all_jobs_done" : status === "failed" ? "job_failed" : null)
    }
  })
})

describe("legacy run statuses", () => {
  const expected = {
    pending: "pending",
    submitted: "submitted",
    downloading: "provisioning",
    building: "provisioning",
    running: "running",
    uploading: "running",
    stopping: "terminating",
    stopped: "terminated",
    restarting: "pending",
    terminating: "terminating",
    terminated: "terminated",
    aborting: "terminating",
    aborted: "terminated",
    failed: "failed",
    done: "done"
  } as const
  for (const legacy of LegacyRunStatusValues) {
    it(`${legacy} → ${expected[legacy]}`, () => {
      expect(runStatusFromLegacy(legacy)).toBe(expected[legacy])
      expect(Schema.decodeUnknownSync(RunStatusFromAny)(legacy)).toBe(expected[legacy])
    })
  }
  it("a legacy final status implies the matching reason, and its run status agrees", () => {
    for (const legacy of LegacyRunStatusValues) {
      const reason = runTerminationReasonFromLegacy(legacy)
      const status = runStatusFromLegacy(legacy)
      if (reason !== null && isRunStatusFinished(status)) {
        expect(runStatusForTerminationReason(reason)).toBe(status)
      }
    }
    expect(runTerminationReasonFromLegacy("aborted")).toBe("aborted_by_user")
    expect(runTerminationReasonFromLegacy("stopped")).toBe("stopped_by_user")
    expect(runTerminationReasonFromLegacy("running")).toBeNull()
  })
  it("modern values pass through RunStatusFromAny and encode as themselves", () => {
    for (const status of RunStatusValues) {
      expect(Schema.decodeUnknownSync(RunStatusFromAny)(status)).toBe(status)
      expect(Schema.encodeSync(RunStatusFromAny)(status)).toBe(status)
    }
    expect(() => Schema.decodeUnknownSync(RunStatusFromAny)("exploded")).toThrow()
  })
})
