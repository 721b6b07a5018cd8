/**
 * Statuses and termination reasons of runs, jobs and instances, with the total functions that
 * relate them (reason → final status, job outcomes → run reason, reason → retry event).
 * Values keep the upstream wire spelling (lowercase snake_case).
 */
import { Schema } from "effect"

// ---------------------------------------------------------------------------------------------
// Run

/** The status of a run. A run in `pending` waits to be resubmitted after a retryable failure. */
export const RunStatus = Schema.Literal(
  "pending",
  "submitted",
  "provisioning",
  "running",
  "terminating",
  "terminated",
  "failed",
  "done"
)
export type RunStatus = typeof RunStatus.Type
export const RunStatusValues: ReadonlyArray<RunStatus> = RunStatus.literals

const FINISHED_RUN_STATUSES: ReadonlySet<RunStatus> = new Set(["terminated", "failed", "done"])

/** A finished run never changes status again. */
export const isRunStatusFinished = (status: RunStatus): boolean => FINISHED_RUN_STATUSES.has(status)

/** Why a run ended (or is ending: the reason is set when the run enters `terminating`). */
export const RunTerminationReason = Schema.Literal(
  "all_jobs_done",
  "job_failed",
  "retry_limit_exceeded",
  "stopped_by_user",
  "aborted_by_user",
  "server_error"
)
export type RunTerminationReason = typeof RunTerminationReason.Type
export const RunTerminationReasonValues: ReadonlyArray<RunTerminationReason> = RunTerminationReason.literals

/** The final status a run reaches for a termination reason. */
export const runStatusForTerminationReason = (reason: RunTerminationReason): RunStatus => {
  switch (reason) {
    case "all_jobs_done":
      return "done"
    case "job_failed":
    case "retry_limit_exceeded":
    case "server_error":
      return "failed"
    case "stopped_by_user":
    case "aborted_by_user":
      return "terminated"
  }
}

// ---------------------------------------------------------------------------------------------
// Job

/** The status of one job submission. */
export const JobStatus = Schema.Literal(
  "submitted",
  "provisioning",
  "pulling",
  "running",
  "terminating",
  "terminated",
  "aborted",
  "failed",
  "done"
)
export type JobStatus = typeof JobStatus.Type
export const JobStatusValues: ReadonlyArray<JobStatus> = JobStatus.literals

const FINISHED_JOB_STATUSES: ReadonlySet<JobStatus> = new Set(["terminated", "aborted", "failed", "done"])

/** A finished job submission never changes status again (a retry is a new submission). */
export const isJobStatusFinished = (status: JobStatus): boolean => FINISHED_JOB_STATUSES.has(status)

/** Reasons the server sets when it ends a job. */
export const JobTerminationReasonByServer = Schema.Literal(
  "failed_to_start_due_to_no_capacity",
  "interrupted_by_no_capacity",
  "instance_unreachable",
  "waiting_instance_limit_exceeded",
  "waiting_runner_limit_exceeded",
  "terminated_by_user",
  "scaled_down",
  "done_by_runner",
  "aborted_by_user",
  "terminated_by_server",
  "inactivity_duration_exceeded"
)
/** Reasons the runner reports when the job ends on its side. */
export const JobTerminationReasonByRunner = Schema.Literal(
  "container_exited_with_error",
  "ports_binding_failed",
  "creating_container_error",
  "executor_error",
  "max_duration_exceeded",
  "log_quota_exceeded"
)

/** Why a job submission ended. */
export const JobTerminationReason = Schema.Literal(
  ...JobTerminationReasonByServer.literals,
  ...JobTerminationReasonByRunner.literals
)
export type JobTerminationReason = typeof JobTerminationReason.Type
export const JobTerminationReasonValues: ReadonlyArray<JobTerminationReason> = JobTerminationReason.literals

/** The final status a job reaches for a termination reason. */
export const jobStatusForTerminationReason = (reason: JobTerminationReason): JobStatus => {
  switch (reason) {
    case "done_by_runner":
      return "done"
    case "aborted_by_user":
      return "aborted"
    case "terminated_by_user":
    case "scaled_down":
    case "terminated_by_server":
    case "inactivity_duration_exceeded":
    case "max_duration_exceeded":
      return "terminated"
    case "failed_to_start_due_to_no_capacity":
    case "interrupted_by_no_capacity":
    case "instance_unreachable":
    case "waiting_instance_limit_exceeded":
    case "waiting_runner_limit_exceeded":
    case "container_exited_with_error":
    case "ports_binding_failed":
    case "creating_container_error":
    case "executor_error":
    case "log_quota_exceeded":
      return "failed"
  }
}

/**
 * The retry event a termination reason counts as, matched against `retry.on_events`;
 * `null` for endings that are never retried (done, stopped, scaled down, time limits).
 */
export const retryEventForJobTerminationReason = (
  reason: JobTerminationReason
): "no-capacity" | "interruption" | "error" | null => {
  if (reason === "failed_to_start_due_to_no_capacity") return "no-capacity"
  if (reason === "interrupted_by_no_capacity") return "interruption"
  return jobStatusForTerminationReason(reason) === "failed" ? "error" : null
}

/**
 * Whether a finished job counts against its run. Upstream counts every ending except a
 * normal exit and a scale-down, so a job terminated behind the run's back fails the run.
 */
export const isJobTerminationReasonFailure = (reason: JobTerminationReason): boolean =>
  reason !== "done_by_runner" && reason !== "scaled_down"

/** What the run needs to know about one job to decide its own termination reason. */
export interface JobOutcome {
  readonly status: JobStatus
  readonly terminationReason?: JobTerminationReason | null | undefined
  /** Set by the caller when the job would be retried but its retry duration is over. */
  readonly retryLimitExceeded?: boolean | undefined
}

const isFailedOutcome = (job: JobOutcome): boolean =>
  job.status === "failed" ||
  ((job.status === "terminating" || job.status === "terminated" || job.status === "aborted") &&
    job.terminationReason != null &&
    isJobTerminationReasonFailure(job.terminationReason))

/**
 * How the jobs of a run decide its termination reason, or `null` while the run goes on.
 * A failed job wins over everything (`job_failed`, or `retry_limit_exceeded` when every failed
 * job ran out of retry time); otherwise the run is done when all its jobs are done (or were
 * scaled down, provided at least one finished normally). Jobs being retried must be left out
 * by the caller: a failure that will be retried does not end the run.
 */
export const runTerminationReasonForJobs = (jobs: ReadonlyArray<JobOutcome>): RunTerminationReason | null => {
  const failed = jobs.filter(isFailedOutcome)
  if (failed.length > 0) {
    return failed.every((job) => job.retryLimitExceeded === true) ? "retry_limit_exceeded" : "job_failed"
  }
  if (jobs.length === 0) return null
  const allFinishedWell = jobs.every(
    (job) => job.status === "done" || (job.status === "terminated" && job.terminationReason === "scaled_down")
  )
  return allFinishedWell && jobs.some((job) => job.status === "done") ? "all_jobs_done" : null
}

// ---------------------------------------------------------------------------------------------
// Instance

/** The status of an instance (a VM, a container host, an SSH host). */
export const InstanceStatus = Schema.Literal("pending", "provisioning", "idle", "busy", "terminating", "terminated")
export type InstanceStatus = typeof InstanceStatus.Type
export const InstanceStatusValues: ReadonlyArray<InstanceStatus> = InstanceStatus.literals

export const isInstanceStatusFinished = (status: InstanceStatus): boolean => status === "terminated"

/** An instance that can take a job now. */
export const isInstanceStatusAvailable = (status: InstanceStatus): boolean => status === "idle"

// ---------------------------------------------------------------------------------------------
// Legacy run statuses (the 0.11-era client API)

/** The older, finer-grained run status list; kept so that old records and clients decode. */
export const LegacyRunStatus = Schema.Literal(
  "pending",
  "submitted",
  "downloading",
  "building",
  "running",
  "uploading",
  "stopping",
  "stopped",
  "restarting",
  "terminating",
  "terminated",
  "aborting",
  "aborted",
  "failed",
  "done"
)
export type LegacyRunStatus = typeof LegacyRunStatus.Type
export const LegacyRunStatusValues: ReadonlyArray<LegacyRunStatus> = LegacyRunStatus.literals

/**
 * The modern status of a legacy one. Downloading and building were steps of getting the
 * container ready (provisioning); uploading artifacts happened while the job still ran; a
 * restart was a resubmission waiting for capacity (pending); stop and abort both end terminated.
 */
export const runStatusFromLegacy = (status: LegacyRunStatus): RunStatus => {
  switch (status) {
    case "pending":
    case "restarting":
      return "pending"
    case "submitted":
      return "submitted"
    case "downloading":
    case "building":
      return "provisioning"
    case "running":
    case "uploading":
      return "running"
    case "stopping":
    case "terminating":
    case "aborting":
      return "terminating"
    case "stopped":
    case "terminated":
    case "aborted":
      return "terminated"
    case "failed":
      return "failed"
    case "done":
      return "done"
  }
}

/** The termination reason a legacy status implies, where it implies one. */
export const runTerminationReasonFromLegacy = (status: LegacyRunStatus): RunTerminationReason | null => {
  switch (status) {
    case "stopping":
    case "stopped":
      return "stopped_by_user"
    case "aborting":
    case "aborted":
      return "aborted_by_user"
    case "failed":
      return "job_failed"
    case "done":
      return "all_jobs_done"
    default:
      return null
  }
}

const isRunStatus = Schema.is(RunStatus)

/** Decodes either the modern or the legacy spelling of a run status into the modern one. */
export const RunStatusFromAny = Schema.transform(Schema.Union(RunStatus, LegacyRunStatus), RunStatus, {
  strict: true,
  decode: (status) => (isRunStatus(status) ? status : runStatusFromLegacy(status)),
  encode: (status) => status
})
