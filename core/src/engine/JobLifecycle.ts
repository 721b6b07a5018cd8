/**
 * The lifecycle of one job submission as a pure function: `(job, event, now) → (job, effects)`.
 * A driver feeds it what happened (a claim, an instance, runner reports, stop requests,
 * timeouts) and carries out the effects (provision, submit to the runner, stop, release).
 * Retries are not decided here: a finished submission stays finished, and the run lifecycle
 * decides whether to add a new one.
 *
 * Transitions (anything else is ignored):
 * - submitted: Claimed → ProvisionInstance; Provisioned → provisioning + SubmitToRunner;
 *   NoCapacity → failed; ProvisioningFailed → terminated (by the server, with the error);
 *   StopRequested → terminated/aborted; ProvisioningTimeout → failed; ProvisioningPending →
 *   provisioning with the backend's queue reason as status message and no instance yet, where
 *   every event of a submitted job means the same.
 * - provisioning, pulling, running: RunnerStarting → pulling (from provisioning), with the
 *   backend's completed provisioning data when it carries one (also while pulling); RunnerPulling → pulling (from provisioning); RunnerRunning →
 *   running; RunnerExited/RunnerFailed → final + ReleaseInstance; StopRequested → terminating +
 *   StopRunner, or with abort → aborted + StopRunner(abort) + ReleaseInstance; InstanceUnreachable
 *   → failed + TerminateInstance; InstanceEnded → final with the backend's reason + TerminateInstance;
 *   ProvisioningTimeout (provisioning) → failed + TerminateInstance;
 *   MaxDurationExceeded → terminating + StopRunner.
 * - terminating: RunnerExited/RunnerFailed → final + ReleaseInstance; StopRequested(abort) and
 *   StopDurationExceeded → final + StopRunner(abort) + ReleaseInstance; InstanceUnreachable and
 *   InstanceEnded → final + TerminateInstance.
 * - terminated, aborted, failed, done: Provisioned → ReleaseInstance (a late instance goes back).
 */
import { Data } from "effect"
import {
  isJobStatusFinished,
  type JobStatus,
  jobStatusForTerminationReason,
  type JobTerminationReason
} from "../domain/Status.ts"
import { Job, JobProvisioningData, JobSubmission, latestSubmission, type Requirements } from "../domain/Job.ts"
import { appliedTransition, ignoredTransition, type Transition } from "./Transition.ts"

/** Reasons the runner reports when a job ends on its side. */
export type RunnerTerminationReason =
  | "container_exited_with_error"
  | "ports_binding_failed"
  | "creating_container_error"
  | "executor_error"
  | "max_duration_exceeded"
  | "log_quota_exceeded"
  | "inactivity_duration_exceeded"

/** Reasons a stop request may carry (who stops the job, and why). */
export type StopReason =
  | "terminated_by_user"
  | "aborted_by_user"
  | "terminated_by_server"
  | "scaled_down"
  | "inactivity_duration_exceeded"

/** What can happen to a job submission. */
export type JobEvent = Data.TaggedEnum<{
  /** A scheduler took the submitted job: find it an instance. */
  Claimed: {}
  /** The job's instance waits in its backend's queue (a batch scheduler's pending job): why, in words. */
  ProvisioningPending: { readonly message: string }
  /** An instance (new or reused) holds the job now. */
  Provisioned: { readonly provisioningData: JobProvisioningData; readonly instanceId?: string | undefined }
  /** No offer and no idle instance could take the job. */
  NoCapacity: { readonly message?: string | undefined }
  /** Finding an instance broke (a store error, a bug), which says nothing about capacity. */
  ProvisioningFailed: { readonly message: string }
  /**
   * The instance exists and its runner is starting (a batch scheduler's allocation that starts
   * it: `Backend.updateProvisioningData`); with the provisioning data the backend completed once
   * the runner is up. The job shows as pulling meanwhile.
   */
  RunnerStarting: { readonly provisioningData?: JobProvisioningData | undefined }
  /** The runner accepted the job and is pulling its image. */
  RunnerPulling: {}
  /** The job's commands started. */
  RunnerRunning: {}
  /** The job's commands ended with an exit status. */
  RunnerExited: { readonly exitStatus: number }
  /** The runner could not run the job, or ended it itself. */
  RunnerFailed: { readonly reason: RunnerTerminationReason; readonly message?: string | undefined }
  /** Stop the job: gracefully (`abort: false`, with a grace period) or at once. */
  StopRequested: { readonly abort: boolean; readonly reason?: StopReason | undefined }
  /** The instance stopped answering for longer than the grace period. */
  InstanceUnreachable: { readonly message?: string | undefined }
  /** The instance ended on its own, as its backend says (a scheduler's time limit, a preemption, a failed node). */
  InstanceEnded: { readonly reason: JobTerminationReason; readonly message: string }
  /** Waiting for an instance (submitted) or for its runner (provisioning) took too long. */
  ProvisioningTimeout: {}
  /** The job ran longer than its `max_duration`. */
  MaxDurationExceeded: {}
  /** A graceful stop's grace period (`stop_duration`) is over. */
  StopDurationExceeded: {}
}>
export const JobEvent = Data.taggedEnum<JobEvent>()

/** What a driver must do after a job transition. */
export type JobEffect = Data.TaggedEnum<{
  /** Find an idle instance or an offer that fits, and provision it; report `Provisioned` or `NoCapacity`. */
  ProvisionInstance: { readonly jobSubmissionId: string; readonly requirements: Requirements }
  /** Reach the instance's runner and submit the job spec and code; report runner states. */
  SubmitToRunner: { readonly jobSubmissionId: string; readonly provisioningData: JobProvisioningData }
  /** Ask the runner to stop the job; `abort` kills it at once. */
  StopRunner: { readonly jobSubmissionId: string; readonly abort: boolean }
  /** The job no longer needs the instance: it goes back to idle. */
  ReleaseInstance: {
    readonly jobSubmissionId: string
    readonly instanceId: string | undefined
    readonly provisioningData: JobProvisioningData
  }
  /** The instance is gone or broken: terminate it (idempotent). */
  TerminateInstance: {
    readonly jobSubmissionId: string
    readonly instanceId: string | undefined
    readonly provisioningData: JobProvisioningData
  }
}>
export const JobEffect = Data.taggedEnum<JobEffect>()

export type JobTransition = Transition<Job, JobEffect>

/** Every event tag, for exhaustive tests and drivers that dispatch on them. */
export const JOB_EVENT_TAGS: ReadonlyArray<JobEvent["_tag"]> = [
  "Claimed",
  "ProvisioningPending",
  "Provisioned",
  "NoCapacity",
  "ProvisioningFailed",
  "RunnerStarting",
  "RunnerPulling",
  "RunnerRunning",
  "RunnerExited",
  "RunnerFailed",
  "StopRequested",
  "InstanceUnreachable",
  "InstanceEnded",
  "ProvisioningTimeout",
  "MaxDurationExceeded",
  "StopDurationExceeded"
]

const NO_VALIDATION = { disableValidation: true } as const

const isOnInstance = (status: JobStatus): boolean =>
  status === "provisioning" || status === "pulling" || status === "running"

/**
 * Whether the submission is still being found an instance: submitted, or provisioning while its
 * instance waits in its backend's queue (no provisioning data yet).
 */
export const isPlacing = (sub: JobSubmission): boolean =>
  sub.status === "submitted" || (sub.status === "provisioning" && sub.jobProvisioningData === undefined)

const withSubmission = (job: Job, submission: JobSubmission): Job =>
  new Job({ ...job, jobSubmissions: [...job.jobSubmissions.slice(0, -1), submission] }, NO_VALIDATION)

const update = (
  job: Job,
  submission: JobSubmission,
  now: number,
  patch: Partial<ConstructorParameters<typeof JobSubmission>[0]>
): Job => withSubmission(job, new JobSubmission({ ...submission, ...patch, lastProcessedAt: new Date(now) }, NO_VALIDATION))

/** The submission ends with `reason`; its final status follows from the reason. */
const finish = (
  job: Job,
  submission: JobSubmission,
  now: number,
  reason: JobTerminationReason,
  patch: Partial<ConstructorParameters<typeof JobSubmission>[0]> = {}
): Job =>
  update(job, submission, now, {
    ...patch,
    status: jobStatusForTerminationReason(reason),
    terminationReason: reason,
    finishedAt: new Date(now)
  })

const instanceEffect = (
  tag: "ReleaseInstance" | "TerminateInstance",
  submission: JobSubmission
): ReadonlyArray<JobEffect> => {
  const provisioningData = submission.jobProvisioningData
  if (provisioningData === undefined) return []
  const args = { jobSubmissionId: submission.id, instanceId: submission.instanceId, provisioningData }
  return [tag === "ReleaseInstance" ? JobEffect.ReleaseInstance(args) : JobEffect.TerminateInstance(args)]
}

const isSpot = (submission: JobSubmission): boolean =>
  submission.jobProvisioningData?.instanceType.resources.spot === true

/**
 * Applies one event to a job's latest submission at time `now` (epoch ms). Never throws: an
 * event that means nothing in the submission's status returns the job unchanged, `ignored`.
 *
 * @example
 * const { entity, effects } = transitionJob(job, JobEvent.Claimed(), Date.now())
 * // effects: [ProvisionInstance]
 */
export const transitionJob = (job: Job, event: JobEvent, now: number): JobTransition => {
  const sub = latestSubmission(job)
  if (sub === undefined) return ignoredTransition(job, "the job has no submission")
  const status = sub.status
  const placing = isPlacing(sub)
  const nothing = (): JobTransition => ignoredTransition(job, `${event._tag} means nothing to a ${status} job`)
  const id = sub.id

  switch (event._tag) {
    case "Claimed":
      return placing
        ? appliedTransition(update(job, sub, now, {}), [
          JobEffect.ProvisionInstance({ jobSubmissionId: id, requirements: job.jobSpec.requirements })
        ])
        : nothing()

    case "ProvisioningPending":
      return placing && (status !== "provisioning" || sub.statusMessage !== event.message)
        ? appliedTransition(update(job, sub, now, { status: "provisioning", statusMessage: event.message }))
        : nothing()

    case "Provisioned": {
      if (placing) {
        const next = update(job, sub, now, {
          status: "provisioning",
          statusMessage: undefined,
          jobProvisioningData: event.provisioningData,
          instanceId: event.instanceId
        })
        return appliedTransition(next, [JobEffect.SubmitToRunner({ jobSubmissionId: id, provisioningData: event.provisioningData })])
      }
      if (isJobStatusFinished(status)) {
        // The job ended while its instance was being prepared: hand the instance back.
        return appliedTransition(job, [
          JobEffect.ReleaseInstance({
            jobSubmissionId: id,
            instanceId: event.instanceId,
            provisioningData: event.provisioningData
          })
        ])
      }
      return nothing()
    }

    case "NoCapacity":
      return placing
        ? appliedTransition(finish(job, sub, now, "failed_to_start_due_to_no_capacity", {
          terminationReasonMessage: event.message
        }))
        : nothing()

    case "ProvisioningFailed":
      return placing
        ? appliedTransition(finish(job, sub, now, "terminated_by_server", { terminationReasonMessage: event.message }))
        : nothing()

    case "RunnerStarting":
      if (placing || !(status === "provisioning" || status === "pulling")) return nothing()
      if (status === "pulling" && (event.provisioningData === undefined || event.provisioningData === sub.jobProvisioningData)) return nothing()
      return appliedTransition(update(job, sub, now, {
        status: "pulling",
        ...(event.provisioningData === undefined ? {} : { jobProvisioningData: event.provisioningData })
      }))

    case "RunnerPulling":
      return status === "provisioning" ? appliedTransition(update(job, sub, now, { status: "pulling" })) : nothing()

    case "RunnerRunning":
      return status === "provisioning" || status === "pulling"
        ? appliedTransition(update(job, sub, now, { status: "running" }))
        : nothing()

    case "RunnerExited": {
      if (isOnInstance(status)) {
        const reason = event.exitStatus === 0 ? "done_by_runner" : "container_exited_with_error"
        return appliedTransition(
          finish(job, sub, now, reason, { exitStatus: event.exitStatus }),
          instanceEffect("ReleaseInstance", sub)
        )
      }
      if (status === "terminating") {
        return appliedTransition(
          finish(job, sub, now, sub.terminationReason ?? "terminated_by_server", { exitStatus: event.exitStatus }),
          instanceEffect("ReleaseInstance", sub)
        )
      }
      return nothing()
    }

    case "RunnerFailed": {
      if (isOnInstance(status)) {
        return appliedTransition(
          finish(job, sub, now, event.reason, { terminationReasonMessage: event.message }),
          instanceEffect("ReleaseInstance", sub)
        )
      }
      if (status === "terminating") {
        // The stop already decided the reason; how the runner ended does not change it.
        return appliedTransition(
          finish(job, sub, now, sub.terminationReason ?? "terminated_by_server"),
          instanceEffect("ReleaseInstance", sub)
        )
      }
      return nothing()
    }

    case "StopRequested": {
      const reason: JobTerminationReason = event.reason ?? (event.abort ? "aborted_by_user" : "terminated_by_user")
      if (placing) return appliedTransition(finish(job, sub, now, reason))
      if (isOnInstance(status)) {
        if (event.abort) {
          return appliedTransition(finish(job, sub, now, reason), [
            JobEffect.StopRunner({ jobSubmissionId: id, abort: true }),
            ...instanceEffect("ReleaseInstance", sub)
          ])
        }
        return appliedTransition(update(job, sub, now, { status: "terminating", terminationReason: reason }), [
          JobEffect.StopRunner({ jobSubmissionId: id, abort: false })
        ])
      }
      if (status === "terminating" && event.abort) {
        // A user abort overrides a graceful user stop; other reasons (a time limit) stay.
        const current = sub.terminationReason ?? reason
        const final = current === "terminated_by_user" && reason === "aborted_by_user" ? reason : current
        return appliedTransition(finish(job, sub, now, final), [
          JobEffect.StopRunner({ jobSubmissionId: id, abort: true }),
          ...instanceEffect("ReleaseInstance", sub)
        ])
      }
      return nothing()
    }

    case "InstanceUnreachable": {
      if (isOnInstance(status)) {
        // A spot instance that vanishes was taken back by the provider.
        const reason = isSpot(sub) ? "interrupted_by_no_capacity" : "instance_unreachable"
        return appliedTransition(finish(job, sub, now, reason, event.message === undefined ? {} : { terminationReasonMessage: event.message }), instanceEffect("TerminateInstance", sub))
      }
      if (status === "terminating") {
        return appliedTransition(
          finish(job, sub, now, sub.terminationReason ?? "instance_unreachable"),
          instanceEffect("TerminateInstance", sub)
        )
      }
      return nothing()
    }

    case "InstanceEnded": {
      if (isOnInstance(status)) {
        return appliedTransition(finish(job, sub, now, event.reason, { terminationReasonMessage: event.message }), instanceEffect("TerminateInstance", sub))
      }
      if (status === "terminating") {
        // A stop decided the reason already (the backend's end is then the stop's own doing).
        return appliedTransition(
          finish(job, sub, now, sub.terminationReason ?? event.reason, sub.terminationReason === undefined ? { terminationReasonMessage: event.message } : {}),
          instanceEffect("TerminateInstance", sub)
        )
      }
      return nothing()
    }

    case "ProvisioningTimeout":
      if (placing) return appliedTransition(finish(job, sub, now, "waiting_instance_limit_exceeded"))
      if (status === "provisioning") {
        return appliedTransition(finish(job, sub, now, "waiting_runner_limit_exceeded"), instanceEffect("TerminateInstance", sub))
      }
      return nothing()

    case "MaxDurationExceeded":
      return isOnInstance(status) && !placing
        ? appliedTransition(update(job, sub, now, { status: "terminating", terminationReason: "max_duration_exceeded" }), [
          JobEffect.StopRunner({ jobSubmissionId: id, abort: false })
        ])
        : nothing()

    case "StopDurationExceeded":
      return status === "terminating"
        ? appliedTransition(finish(job, sub, now, sub.terminationReason ?? "terminated_by_server"), [
          JobEffect.StopRunner({ jobSubmissionId: id, abort: true }),
          ...instanceEffect("ReleaseInstance", sub)
        ])
        : nothing()
  }
}

/** The default wait for a runner to answer on a new instance (upstream: 10 minutes). */
export const DEFAULT_PROVISIONING_TIMEOUT_MS = 10 * 60_000

/**
 * When the latest submission exceeds its `max_duration` (epoch ms), or `null` without a limit
 * or when it is not on an instance. Counted from the submission, as the runner enforces it too.
 */
export const maxDurationDeadline = (job: Job): number | null => {
  const sub = latestSubmission(job)
  const limit = job.jobSpec.maxDuration
  if (sub === undefined || limit === null || !isOnInstance(sub.status) || isPlacing(sub)) return null
  return sub.submittedAt.getTime() + limit * 1000
}

/** When a graceful stop turns into a forced one (epoch ms), or `null` unless terminating. */
export const stopDeadline = (job: Job): number | null => {
  const sub = latestSubmission(job)
  if (sub === undefined || sub.status !== "terminating") return null
  return sub.lastProcessedAt.getTime() + job.jobSpec.stopDuration * 1000
}

/** When a provisioning submission gives up on its runner (epoch ms), or `null` otherwise. */
export const provisioningDeadline = (job: Job, timeoutMs: number = DEFAULT_PROVISIONING_TIMEOUT_MS): number | null => {
  const sub = latestSubmission(job)
  if (sub === undefined || sub.status !== "provisioning" || isPlacing(sub)) return null
  return sub.lastProcessedAt.getTime() + timeoutMs
}
