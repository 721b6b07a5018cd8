/**
 * The lifecycle of a run as a pure function: `(run, event, now) → (run, effects)`. A run's
 * status follows its jobs: all done → done; a failed job fails the run, or sends it to
 * `pending` for a resubmission when its retry policy covers the failure and its retry
 * duration is not over (while other replicas still run, the failed replica restarts at once
 * and the run keeps its status); a stop goes through `terminating` to `terminated`.
 *
 * | status       | JobsChanged                                  | StopRequested          | RetryDue                    | ServerError |
 * | ------------ | -------------------------------------------- | ---------------------- | --------------------------- | ----------- |
 * | pending      | stays (or fails when retry time is over)     | terminating/terminated | submitted, new submissions  | terminating/failed |
 * | submitted, provisioning, running | status from jobs; pending; terminating; done | terminating/terminated | ignored | terminating/failed |
 * | terminating  | final status of its reason once jobs ended   | abort only: aborted    | ignored                     | ignored     |
 * | terminated, failed, done | ignored                          | ignored                | ignored                     | ignored     |
 */
import { Data } from "effect"
import { Job, JobSubmission, lastProvisionedSubmission, latestSubmission } from "../domain/Job.ts"
import { newestJobSubmission, Run, runCost } from "../domain/Run.ts"
import { jobSpecsFromRunSpec } from "../domain/RunJobSpecs.ts"
import {
  isJobStatusFinished,
  isJobTerminationReasonFailure,
  isRunStatusFinished,
  type JobOutcome,
  retryEventForJobTerminationReason,
  type RunStatus,
  runStatusForTerminationReason,
  type RunTerminationReason,
  runTerminationReasonForJobs
} from "../domain/Status.ts"
import type { StopReason } from "./JobLifecycle.ts"
import { appliedTransition, ignoredTransition, type Transition } from "./Transition.ts"

/** What can happen to a run. */
export type RunEvent = Data.TaggedEnum<{
  /** One or more of its jobs changed: derive the run's status again. */
  JobsChanged: {}
  /** The user stops the run (`dstack stop`, `-x` to abort). */
  StopRequested: { readonly abort: boolean }
  /** The backoff of a pending run is over: resubmit the failed jobs. */
  RetryDue: {}
  /** The server cannot go on with the run. */
  ServerError: { readonly message?: string | undefined }
}>
export const RunEvent = Data.taggedEnum<RunEvent>()

/** What a driver must do after a run transition. */
export type RunEffect = Data.TaggedEnum<{
  /** Stop a job (feed it `StopRequested` with these fields). */
  StopJob: { readonly jobSubmissionId: string; readonly abort: boolean; readonly reason: StopReason }
  /** Wake the run at `at` (epoch ms) with `RetryDue`. */
  Resubmit: { readonly at: number; readonly delayMs: number; readonly attempt: number }
  /** A new submission of a job was added to the run: schedule it (feed it `Claimed`). */
  JobSubmitted: { readonly jobSubmissionId: string; readonly replicaNum: number; readonly jobNum: number }
}>
export const RunEffect = Data.taggedEnum<RunEffect>()

export type RunTransition = Transition<Run, RunEffect>

export const RUN_EVENT_TAGS: ReadonlyArray<RunEvent["_tag"]> = ["JobsChanged", "StopRequested", "RetryDue", "ServerError"]

/** Upstream resubmission backoff: 15 s, 30 s, 1 min, 2 min, 5 min, then 10 min. */
export const RETRY_BACKOFF_MS: ReadonlyArray<number> = [15_000, 30_000, 60_000, 120_000, 300_000, 600_000]

/** The delay before resubmission attempt `attempt` (0 for the first retry). */
export const retryBackoffMs = (attempt: number): number =>
  RETRY_BACKOFF_MS[Math.min(Math.max(0, Math.floor(attempt)), RETRY_BACKOFF_MS.length - 1)]

/** How the run lifecycle names new job submissions; pass a UUID generator in production. */
export interface RunTransitionOptions {
  readonly newSubmissionId?: ((job: Job, submissionNum: number) => string) | undefined
}

const defaultSubmissionId = (job: Job, submissionNum: number): string => {
  const previous = latestSubmission(job)
  return `${previous?.id ?? job.jobSpec.jobName}-${submissionNum}`
}

// ---------------------------------------------------------------------------------------------
// Retry decisions

/** Whether a failed job is resubmitted: no (the run fails), yes, or no longer (retry time is over). */
export type RetryVerdict = "no-retry" | "retry" | "limit-exceeded"

/**
 * The upstream rule: the failure's retry event must be in `retry.on_events`; the retry duration
 * counts from the run's submission for a job that never got capacity, else from the last
 * submission that reached an instance.
 */
export const retryVerdict = (run: Pick<Run, "submittedAt">, job: Job, now: number): RetryVerdict => {
  const sub = latestSubmission(job)
  const reason = sub?.terminationReason
  if (reason === undefined) return "no-retry"
  const event = retryEventForJobTerminationReason(reason)
  const retry = job.jobSpec.retry
  if (event === null || retry === undefined || !retry.onEvents.includes(event)) return "no-retry"
  const provisioned = lastProvisionedSubmission(job)
  const start = provisioned === undefined ? run.submittedAt.getTime() : provisioned.lastProcessedAt.getTime()
  return now - start > retry.duration * 1000 ? "limit-exceeded" : "retry"
}

const isFailed = (sub: JobSubmission): boolean =>
  sub.status === "failed" ||
  ((sub.status === "terminating" || sub.status === "terminated" || sub.status === "aborted") &&
    sub.terminationReason !== undefined &&
    isJobTerminationReasonFailure(sub.terminationReason))

interface Assessment {
  /** Replicas with a job to resubmit. */
  readonly retryReplicas: ReadonlySet<number>
  /** Outcomes that decide the run's reason (jobs being retried, and their stopped siblings, left out). */
  readonly outcomes: ReadonlyArray<JobOutcome>
  /** The highest submission number among jobs to retry: the backoff attempt. */
  readonly attempt: number
}

const assess = (run: Run, now: number): Assessment => {
  const verdicts = new Map<Job, RetryVerdict>()
  const retryReplicas = new Set<number>()
  let attempt = 0
  for (const job of run.jobs) {
    const sub = latestSubmission(job)
    if (sub === undefined || !isFailed(sub)) continue
    const verdict = retryVerdict(run, job, now)
    verdicts.set(job, verdict)
    if (verdict === "retry") {
      retryReplicas.add(job.jobSpec.replicaNum)
      attempt = Math.max(attempt, sub.submissionNum)
    }
  }
  const outcomes: Array<JobOutcome> = []
  for (const job of run.jobs) {
    const sub = latestSubmission(job)
    if (sub === undefined) {
      outcomes.push({ status: "submitted" })
      continue
    }
    if (retryReplicas.has(job.jobSpec.replicaNum)) {
      // The replica is resubmitted whole: its retried job and the siblings the server stopped
      // for it do not decide the run. Any other failure in it still does.
      if (verdicts.get(job) === "retry" || sub.terminationReason === "terminated_by_server") continue
      if (!isFailed(sub)) continue
    }
    outcomes.push({
      status: sub.status,
      terminationReason: sub.terminationReason,
      retryLimitExceeded: verdicts.get(job) === "limit-exceeded"
    })
  }
  return { retryReplicas, outcomes, attempt }
}

// ---------------------------------------------------------------------------------------------
// Helpers

const NO_VALIDATION = { disableValidation: true } as const

const update = (run: Run, now: number, patch: Partial<ConstructorParameters<typeof Run>[0]>): Run => {
  const jobs = patch.jobs ?? run.jobs
  return new Run(
    {
      ...run,
      ...patch,
      jobs,
      lastProcessedAt: new Date(now),
      latestJobSubmission: newestJobSubmission({ jobs }),
      cost: runCost({ jobs }, now)
    },
    NO_VALIDATION
  )
}

const unfinishedSubmissions = (run: Run, filter: (job: Job) => boolean = () => true): ReadonlyArray<JobSubmission> =>
  run.jobs.flatMap((job) => {
    const sub = latestSubmission(job)
    return sub !== undefined && !isJobStatusFinished(sub.status) && filter(job) ? [sub] : []
  })

const allJobsFinished = (run: Run): boolean => unfinishedSubmissions(run).length === 0

const isScaledDown = (sub: JobSubmission | undefined): boolean => sub?.status === "terminated" && sub.terminationReason === "scaled_down"

const activeStatus = (run: Run): RunStatus => {
  // A service's replicas the autoscaler stopped do not count: scaled to zero it stays running.
  const live = run.jobs.filter((job) => !isScaledDown(latestSubmission(job)))
  if (live.length === 0 && run.jobs.length > 0) return "running"
  const statuses = live.map((job) => latestSubmission(job)?.status ?? "submitted")
  if (statuses.includes("running")) return "running"
  if (statuses.includes("provisioning") || statuses.includes("pulling")) return "provisioning"
  return "submitted"
}

/** Ends the run with `reason`: at once when no job is left, else through `terminating`. */
const terminate = (
  run: Run,
  now: number,
  reason: RunTerminationReason,
  stop: { readonly abort: boolean; readonly jobReason: StopReason }
): RunTransition => {
  // A job already terminating only needs a new request when the stop is an abort.
  const toStop = unfinishedSubmissions(run).filter((sub) => stop.abort || sub.status !== "terminating")
  if (allJobsFinished(run)) {
    return appliedTransition(update(run, now, { status: runStatusForTerminationReason(reason), terminationReason: reason }))
  }
  return appliedTransition(
    update(run, now, { status: "terminating", terminationReason: reason }),
    toStop.map((sub) => RunEffect.StopJob({ jobSubmissionId: sub.id, abort: stop.abort, reason: stop.jobReason }))
  )
}

/** The run's next state from its jobs (for pending and active runs). */
const derive = (run: Run, now: number, newId: SubmissionIds): RunTransition => {
  const { attempt, outcomes, retryReplicas } = assess(run, now)
  const reason = runTerminationReasonForJobs(outcomes)
  if (reason === "job_failed" || reason === "retry_limit_exceeded") {
    return terminate(run, now, reason, { abort: false, jobReason: "terminated_by_server" })
  }
  if (retryReplicas.size > 0) {
    // Siblings of a job to retry are stopped, so the replica restarts as a whole.
    const siblings = unfinishedSubmissions(run, (job) => retryReplicas.has(job.jobSpec.replicaNum))
    const stops = siblings
      .filter((sub) => sub.status !== "terminating")
      .map((sub) => RunEffect.StopJob({ jobSubmissionId: sub.id, abort: false, reason: "terminated_by_server" }))
    if (run.status === "pending") return appliedTransition(update(run, now, {}), stops)
    const othersActive = unfinishedSubmissions(run, (job) => !retryReplicas.has(job.jobSpec.replicaNum)).length > 0
    if (othersActive) {
      // Other replicas keep the run up (a service stays served): the failed replicas restart
      // at once, without backoff, as soon as all their jobs have stopped.
      const ready = new Set([...retryReplicas].filter((replica) =>
        unfinishedSubmissions(run, (job) => job.jobSpec.replicaNum === replica).length === 0
      ))
      const { effects, jobs } = addSubmissions(run, now, ready, newId)
      const next = update(run, now, { jobs })
      return appliedTransition(update(next, now, { status: activeStatus(next) }), [...stops, ...effects])
    }
    const delayMs = retryBackoffMs(attempt)
    return appliedTransition(update(run, now, { status: "pending" }), [
      ...stops,
      RunEffect.Resubmit({ at: now + delayMs, delayMs, attempt })
    ])
  }
  if (reason === "all_jobs_done") {
    return appliedTransition(update(run, now, { status: "done", terminationReason: "all_jobs_done" }))
  }
  // A pending run waits for its RetryDue, whatever its other jobs do meanwhile.
  return appliedTransition(update(run, now, { status: run.status === "pending" ? "pending" : activeStatus(run) }))
}

type SubmissionIds = (job: Job, submissionNum: number) => string

/**
 * Adds a new submission to every job of the given replicas. A service's replica restarts on the
 * run's current spec, as upstream's does (a replica of an older deployment is up to date once
 * retried, instead of being rolled after); other runs' specs do not change while they run.
 */
const addSubmissions = (
  run: Run,
  now: number,
  replicas: ReadonlySet<number>,
  newId: SubmissionIds
): { readonly jobs: ReadonlyArray<Job>; readonly effects: ReadonlyArray<RunEffect> } => {
  const effects: Array<RunEffect> = []
  const current = run.runSpec.configuration.type === "service"
    ? jobSpecsFromRunSpec(run.runSpec, { replicas: Math.max(...replicas) + 1 })
    : undefined
  const jobs = run.jobs.map((old) => {
    if (!replicas.has(old.jobSpec.replicaNum)) return old
    const spec = current?.find((s) => s.replicaNum === old.jobSpec.replicaNum && s.jobNum === old.jobSpec.jobNum)
    const job = spec === undefined ? old : new Job({ ...old, jobSpec: spec }, NO_VALIDATION)
    const submissionNum = (latestSubmission(job)?.submissionNum ?? -1) + 1
    const submission = new JobSubmission(
      {
        id: newId(job, submissionNum),
        submissionNum,
        // The deployment whose spec the job now runs.
        deploymentNum: spec !== undefined ? run.deploymentNum : latestSubmission(job)?.deploymentNum ?? run.deploymentNum,
        submittedAt: new Date(now),
        lastProcessedAt: new Date(now),
        status: "submitted"
      },
      NO_VALIDATION
    )
    effects.push(
      RunEffect.JobSubmitted({
        jobSubmissionId: submission.id,
        replicaNum: job.jobSpec.replicaNum,
        jobNum: job.jobSpec.jobNum
      })
    )
    return new Job({ ...job, jobSubmissions: [...job.jobSubmissions, submission] }, NO_VALIDATION)
  })
  return { jobs, effects }
}

/** How long a pending run waits again when its replicas are still stopping at `RetryDue`. */
export const RETRY_RECHECK_MS = 5_000

// ---------------------------------------------------------------------------------------------
// The transition

/**
 * Applies one event to a run at time `now` (epoch ms). Never throws: an event that means
 * nothing in the run's status returns the run unchanged, `ignored`.
 *
 * @example
 * transitionRun(run, RunEvent.StopRequested({ abort: false }), Date.now())
 * // run terminating (stopped_by_user), one StopJob per unfinished job
 */
export const transitionRun = (
  run: Run,
  event: RunEvent,
  now: number,
  options: RunTransitionOptions = {}
): RunTransition => {
  const status = run.status
  const newId = options.newSubmissionId ?? defaultSubmissionId
  const nothing = (why = `${event._tag} means nothing to a ${status} run`): RunTransition => ignoredTransition(run, why)
  if (isRunStatusFinished(status)) return nothing()

  switch (event._tag) {
    case "JobsChanged": {
      if (status === "terminating") {
        const reason = run.terminationReason ?? "server_error"
        return allJobsFinished(run)
          ? appliedTransition(update(run, now, { status: runStatusForTerminationReason(reason), terminationReason: reason }))
          : appliedTransition(update(run, now, {}))
      }
      return derive(run, now, newId)
    }

    case "StopRequested": {
      const reason: RunTerminationReason = event.abort ? "aborted_by_user" : "stopped_by_user"
      const jobReason: StopReason = event.abort ? "aborted_by_user" : "terminated_by_user"
      if (status === "terminating") {
        if (!event.abort) return nothing("the run is already terminating; only an abort goes further")
        const upgraded = run.terminationReason === "stopped_by_user" ? reason : (run.terminationReason ?? reason)
        return terminate(update(run, now, { terminationReason: upgraded }), now, upgraded, { abort: true, jobReason })
      }
      return terminate(run, now, reason, { abort: event.abort, jobReason })
    }

    case "RetryDue": {
      if (status !== "pending") return nothing()
      const next = derive(run, now, newId)
      if (next.entity.status !== "pending") return next
      const { retryReplicas } = assess(run, now)
      if (retryReplicas.size === 0) return nothing("no job of the run needs a retry")
      const stopping = unfinishedSubmissions(run, (job) => retryReplicas.has(job.jobSpec.replicaNum))
      if (stopping.length > 0) {
        return appliedTransition(update(run, now, {}), [
          RunEffect.Resubmit({ at: now + RETRY_RECHECK_MS, delayMs: RETRY_RECHECK_MS, attempt: -1 })
        ])
      }
      const { effects, jobs } = addSubmissions(run, now, retryReplicas, newId)
      return appliedTransition(update(run, now, { status: "submitted", jobs }), effects)
    }

    case "ServerError":
      if (status === "terminating") return nothing("the run is already terminating")
      return terminate(run, now, "server_error", { abort: false, jobReason: "terminated_by_server" })
  }
}
