/**
 * The fields upstream's server derives for a run's answer from what the run stores (upstream
 * 0.21.2 `services/runs` and `services/jobs`): the run's and each job submission's
 * `status_message` (the status in words: `exited (1)`, `no capacity`, `stopped`, `pulling`,
 * `retrying`, …) and `error` (the termination reason in words, for reasons the status message
 * does not already say: `inactivity duration exceeded`, `retry limit exceeded`, …). Upstream's
 * CLI prints them: `dstack ps` shows a finished run's latest submission's status message, and
 * an attached `dstack apply` ends with both (`Terminated (Inactivity duration exceeded)`).
 *
 * A submission that stores its own status message (what it waits for in a batch scheduler's
 * queue) keeps it.
 */
import type { RunWire } from "../engine/RunRecord.ts"

type SubmissionWire = NonNullable<RunWire["latest_job_submission"]>
type JobWire = NonNullable<RunWire["jobs"]>[number]

/** Upstream's `RunTerminationReason.to_error`. */
const RUN_ERRORS: Readonly<Record<string, string>> = {
  retry_limit_exceeded: "retry limit exceeded",
  server_error: "server error",
  gateway_error: "gateway error"
}

/** Upstream's `JobTerminationReason.to_error`: reasons the status message does not already say. */
const JOB_ERRORS: Readonly<Record<string, string>> = {
  instance_unreachable: "instance unreachable",
  instance_access_revoked: "instance access revoked",
  waiting_instance_limit_exceeded: "waiting instance limit exceeded",
  waiting_runner_limit_exceeded: "waiting runner limit exceeded",
  volume_error: "volume error",
  gateway_error: "gateway error",
  scaled_down: "scaled down",
  inactivity_duration_exceeded: "inactivity duration exceeded",
  terminated_due_to_utilization_policy: "utilization policy",
  ports_binding_failed: "ports binding failed",
  creating_container_error: "runner error",
  executor_error: "executor error",
  max_duration_exceeded: "max duration exceeded",
  log_quota_exceeded: "log quota exceeded"
}

/** Upstream's `_get_job_status_message`. */
export const jobStatusMessage = (sub: SubmissionWire): string => {
  const reason = sub.termination_reason ?? undefined
  switch (sub.status) {
    case "done":
      return "exited (0)"
    case "failed":
      if (reason === "container_exited_with_error") return `exited (${sub.exit_status ?? "None"})`
      if (reason === "failed_to_start_due_to_no_capacity") return (sub.termination_reason_message ?? "").includes("No matching fleet found") ? "no fleets" : "no capacity"
      if (reason === "interrupted_by_no_capacity") return "interrupted"
      return "error"
    case "terminated":
      if (reason === "terminated_by_user") return "stopped"
      if (reason === "aborted_by_user") return "aborted"
      return sub.status
    default:
      return sub.status
  }
}

/** A submission with upstream's `status_message` (unless it stores one) and `error`. */
const submissionWithMessages = (sub: SubmissionWire): SubmissionWire => {
  const reason = sub.termination_reason
  return {
    ...sub,
    status_message: sub.status_message ?? jobStatusMessage(sub),
    error: (reason === undefined || reason === null ? undefined : JOB_ERRORS[reason]) ?? null
  } as SubmissionWire
}

/** Upstream's `_get_run_status_message`, on a run's jobs (their submissions oldest first). */
export const runStatusMessage = (run: RunWire): string => {
  const jobs = run.jobs ?? []
  const withSubmissions = jobs.filter((j) => (j.job_submissions ?? []).length > 0)
  if (withSubmissions.length === 0) return run.status
  if (withSubmissions.every((j) => j.job_submissions!.at(-1)!.status === "pulling")) return "pulling"
  if (run.status === "submitted" || run.status === "pending") {
    for (const job of withSubmissions) {
      const onEvents: ReadonlyArray<string> = job.job_spec.retry?.on_events ?? []
      const last = job.job_submissions!.findLast((s) => s.termination_reason !== undefined && s.termination_reason !== null)
      if (last?.termination_reason === "failed_to_start_due_to_no_capacity" && onEvents.includes("no-capacity")) return "retrying"
    }
  }
  return run.status
}

const derived = new WeakMap<object, Pick<RunWire, "jobs" | "latest_job_submission"> & { readonly status_message: string; readonly error: string | null }>()

/**
 * `run` (a run's wire form) with upstream's derived fields. `stored`, when given, is the stored
 * document the wire form was read from: what is derived from it is kept with it (rows the
 * caches hold are the same objects from one request to the next), since it changes only with it.
 */
export const withRunMessages = (run: RunWire, stored?: unknown): RunWire => {
  const key = stored !== null && typeof stored === "object" ? stored : undefined
  let fields = key === undefined ? undefined : derived.get(key)
  if (fields === undefined) {
    const reason = run.termination_reason
    fields = {
      status_message: runStatusMessage(run),
      error: (reason === undefined || reason === null ? undefined : RUN_ERRORS[reason]) ?? null,
      jobs: (run.jobs ?? []).map((job: JobWire) => ({ ...job, job_submissions: (job.job_submissions ?? []).map(submissionWithMessages) })),
      ...(run.latest_job_submission === undefined || run.latest_job_submission === null ? {} : { latest_job_submission: submissionWithMessages(run.latest_job_submission) })
    }
    if (key !== undefined) derived.set(key, fields)
  }
  return { ...run, ...fields } as RunWire
}
