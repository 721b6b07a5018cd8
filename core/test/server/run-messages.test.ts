// Upstream's derived fields of a run's answer (RunMessages.ts): status messages and errors as
// upstream 0.21.2's server words them from the statuses and termination reasons.
import { describe, expect, it } from "vitest"
import type { RunWire } from "../../src/engine/RunRecord.ts"
import { jobStatusMessage, runStatusMessage, withRunMessages } from "../../src/server/RunMessages.ts"

const sub = (fields: Record<string, unknown>) => ({ id: "s", submission_num: 0, submitted_at: "2026-01-01T00:00:00Z", last_processed_at: "2026-01-01T00:00:00Z", status: "running", ...fields }) as any
const run = (status: string, subs: ReadonlyArray<ReadonlyArray<any>>, fields: Record<string, unknown> = {}, retry?: unknown) =>
  ({ id: "r", project_name: "main", user: "admin", submitted_at: "2026-01-01T00:00:00Z", last_processed_at: "2026-01-01T00:00:00Z", status, run_spec: {}, jobs: subs.map((s) => ({ job_spec: { job_name: "j", retry }, job_submissions: s })), ...fields }) as unknown as RunWire

describe("upstream's run and job status messages and errors", () => {
  it("words a job submission's status as upstream's _get_job_status_message", () => {
    expect(jobStatusMessage(sub({ status: "done", termination_reason: "done_by_runner" }))).toBe("exited (0)")
    expect(jobStatusMessage(sub({ status: "failed", termination_reason: "container_exited_with_error", exit_status: 3 }))).toBe("exited (3)")
    expect(jobStatusMessage(sub({ status: "failed", termination_reason: "failed_to_start_due_to_no_capacity" }))).toBe("no capacity")
    expect(jobStatusMessage(sub({ status: "failed", termination_reason: "failed_to_start_due_to_no_capacity", termination_reason_message: "No matching fleet found" }))).toBe("no fleets")
    expect(jobStatusMessage(sub({ status: "failed", termination_reason: "interrupted_by_no_capacity" }))).toBe("interrupted")
    expect(jobStatusMessage(sub({ status: "failed", termination_reason: "instance_unreachable" }))).toBe("error")
    expect(jobStatusMessage(sub({ status: "terminated", termination_reason: "terminated_by_user" }))).toBe("stopped")
    expect(jobStatusMessage(sub({ status: "terminated", termination_reason: "aborted_by_user" }))).toBe("aborted")
    expect(jobStatusMessage(sub({ status: "terminated", termination_reason: "inactivity_duration_exceeded" }))).toBe("terminated")
    expect(jobStatusMessage(sub({ status: "provisioning" }))).toBe("provisioning")
  })

  it("says why a dev environment stopped for inactivity: the submission's error, the run's status message", () => {
    const ended = sub({ status: "terminated", termination_reason: "inactivity_duration_exceeded", termination_reason_message: "no SSH connection for 60s" })
    const answer = withRunMessages(run("failed", [[ended]], { termination_reason: "job_failed", latest_job_submission: ended })) as any
    expect(answer.jobs[0].job_submissions[0]).toMatchObject({ status_message: "terminated", error: "inactivity duration exceeded" })
    expect(answer.latest_job_submission).toMatchObject({ status_message: "terminated", error: "inactivity duration exceeded" })
    // job_failed has no error of its own in upstream's words: the job's says it.
    expect(answer).toMatchObject({ status_message: "failed", error: null })
  })

  it("gives the run's error for the reasons upstream words, and keeps a submission's own status message", () => {
    const failed = sub({ status: "failed", termination_reason: "executor_error" })
    expect(withRunMessages(run("failed", [[failed]], { termination_reason: "retry_limit_exceeded" }))).toMatchObject({ status_message: "failed", error: "retry limit exceeded" })
    expect(withRunMessages(run("failed", [[failed]], { termination_reason: "server_error" }))).toMatchObject({ error: "server error" })
    expect(withRunMessages(run("terminated", [[failed]], { termination_reason: "stopped_by_user" }))).toMatchObject({ error: null })
    expect((withRunMessages(run("failed", [[failed]])) as any).jobs[0].job_submissions[0]).toMatchObject({ status_message: "error", error: "executor error" })
    const queued = sub({ status: "provisioning", status_message: "Slurm PENDING (Resources)" })
    expect((withRunMessages(run("provisioning", [[queued]])) as any).jobs[0].job_submissions[0]).toMatchObject({ status_message: "Slurm PENDING (Resources)", error: null })
  })

  it("says pulling when every job pulls, retrying when a pending run waits for capacity it retries on", () => {
    expect(runStatusMessage(run("provisioning", [[sub({ status: "pulling" })], [sub({ status: "pulling" })]]))).toBe("pulling")
    expect(runStatusMessage(run("provisioning", [[sub({ status: "pulling" })], [sub({ status: "provisioning" })]]))).toBe("provisioning")
    const noCapacity = sub({ status: "failed", termination_reason: "failed_to_start_due_to_no_capacity" })
    expect(runStatusMessage(run("pending", [[noCapacity]], {}, { on_events: ["no-capacity"], duration: 3600 }))).toBe("retrying")
    expect(runStatusMessage(run("pending", [[noCapacity]], {}, { on_events: ["error"], duration: 3600 }))).toBe("pending")
    expect(runStatusMessage(run("submitted", []))).toBe("submitted")
  })

  it("derives once per stored document", () => {
    const doc = {}
    const wire = run("running", [[sub({})]])
    const first = withRunMessages(wire, doc) as any
    const second = withRunMessages({ ...wire, cost: 2 } as RunWire, doc) as any
    expect(second.jobs).toBe(first.jobs)
    expect(second.cost).toBe(2)
  })
})
