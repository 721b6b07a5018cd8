/**
 * The run worker: the one fiber per active run that this replica holds the lease of. It
 * computes every transition of the run and its jobs on a fresh read (runner reports, stop
 * requests, deadlines that passed, new submissions), writes them against the row's version,
 * and only then carries out their effects: provisioning, handing a job to its runner and
 * following it, stopping it, releasing or terminating its instance. Between steps it sleeps
 * until something wakes it (a signal) or the next deadline of the run comes. It stops when the
 * run has finished and its followers delivered the last lines, or when its lease can no longer
 * be relied on.
 */
import { Deferred, Duration, Effect, Fiber, Option, Queue } from "effect"
import { type JobProvisioningData, latestSubmission } from "../domain/Job.ts"
import type { Run } from "../domain/Run.ts"
import { isJobStatusFinished, isRunStatusFinished } from "../domain/Status.ts"
import type { FifoSemaphore } from "../internal/FifoSemaphore.ts"
import { faultPoint } from "../internal/Faults.ts"
import type { Lease, StateStoreService, StoredDocument } from "../ports/StateStore.ts"
import type { ComputeService } from "./Compute.ts"
import { errorMessage, jobOfSubmission, withJob } from "./internal.ts"
import type { InstancePool } from "./InstancePool.ts"
import {
  isPlacing,
  JobEffect,
  JobEvent,
  maxDurationDeadline,
  provisioningDeadline,
  stopDeadline,
  transitionJob
} from "./JobLifecycle.ts"
import type { Provisioner } from "./Provisioning.ts"
import { decodeRow, encodeRecord, type RunRecord } from "./RunRecord.ts"
import { RunEvent, transitionRun } from "./RunLifecycle.ts"
import { follow, type FollowerOptions, withRunner } from "./RunnerFollower.ts"
import { stopJob } from "./RunnerSession.ts"

/** What wakes a worker. */
export type Signal =
  | {
    readonly _tag: "Changed"
    /** The run as whoever changed it wrote it (and its decoded record): taken instead of a read. */
    readonly known?: { readonly row: StoredDocument; readonly record: RunRecord }
    /** The row a write of this process made (the change feed's notice of it): decoded instead of a read. */
    readonly row?: StoredDocument
  }
  | { readonly _tag: "Job"; readonly submissionId: string; readonly event: JobEvent }
  | { readonly _tag: "HandedToRunner"; readonly submissionId: string }
  | { readonly _tag: "FollowerDone"; readonly submissionId: string }
  | { readonly _tag: "LeaseLost" }

/** What the engine keeps of one of its workers. */
export interface WorkerHandle {
  readonly signals: Queue.Queue<Signal>
  /** The newest version of the run the worker read or wrote: notices up to it are not news. */
  knownVersion: number
  /**
   * The newest version a Changed signal was queued for: the worker reads the run after taking
   * that signal, so a later notice of a version up to it is not news either (a `wake` naming
   * the version it stored, then the change feed's notice of the same write).
   */
  announcedVersion: number
  /**
   * The version the worker's write in flight was computed from: the notice of version + 1 is
   * that write's own (if another replica's write took that version, ours fails with Conflict
   * and the worker reads the row again anyway).
   */
  writingFrom: number | undefined
  /** The run's lease token. */
  readonly token: string
  /** Until when the lease may be relied on (renewals move it on). */
  trustedUntil: number
  /** Done once the worker took its first step (or ended): resync claims more only then. */
  readonly started: Deferred.Deferred<void>
}

export interface WorkerOptions {
  readonly store: StateStoreService
  readonly compute: ComputeService
  readonly pool: InstancePool
  readonly provisioner: Provisioner
  readonly follower: FollowerOptions
  /** At most this many workers read, decide and write at once. */
  readonly stepPermits: FifoSemaphore
  /** How long a runner may take to answer on a new instance. */
  readonly provisioningTimeoutMs: number
}

/** How long a stop request to a runner may take before it is given up (and logged). */
const STOP_TIMEOUT_SECONDS = 30

/** Job events that mean the instance's runner answered just now. */
const RUNNER_EVENTS: ReadonlySet<string> = new Set(["RunnerPulling", "RunnerRunning", "RunnerExited", "RunnerFailed"])

/** How long a worker waits for a runner's first report after handing it a job, to write both at once. */
const HANDOVER_COALESCE_MS = 25

/**
 * JSON with sorted keys (jsonb does not keep key order), without the fields that change on
 * every pass without meaning anything happened: `last_processed_at`, and `cost`, which grows
 * with time while a paid instance runs (the API computes it when it answers).
 */
const canonical = (value: unknown, skip: ReadonlySet<string> = CHANGING_BY_THEMSELVES): string =>
  JSON.stringify(value, (key, v) =>
    skip.has(key)
      ? undefined
      : v && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, (v as Record<string, unknown>)[k]]))
        : v
  )

const CHANGING_BY_THEMSELVES: ReadonlySet<string> = new Set(["last_processed_at", "cost"])
/** Also the run's `latest_job_submission`, which only mirrors its jobs (the API stores runs without it). */
const DERIVED_TOO: ReadonlySet<string> = new Set([...CHANGING_BY_THEMSELVES, "latest_job_submission"])

/**
 * `canonical` of a stored row's document, computed once per document object: a worker compares
 * each step's new document with the same stored one until it writes or reads again.
 */
const storedCanonical = new WeakMap<object, Map<ReadonlySet<string>, string>>()
const canonicalOfStored = (doc: unknown, skip: ReadonlySet<string>): string => {
  if (doc === null || typeof doc !== "object") return canonical(doc, skip)
  let bySkip = storedCanonical.get(doc)
  if (bySkip === undefined) storedCanonical.set(doc, (bySkip = new Map()))
  let text = bySkip.get(skip)
  if (text === undefined) bySkip.set(skip, (text = canonical(doc, skip)))
  return text
}

/** Equal as stored documents once the fields that change by themselves are left out (`stored`: a row's document). */
const sameIgnoringProcessedAt = (next: unknown, stored: unknown): boolean => canonical(next) === canonicalOfStored(stored, CHANGING_BY_THEMSELVES)

/** Equal once derived fields are left out too. */
const sameButDerived = (next: unknown, stored: unknown): boolean => canonical(next, DERIVED_TOO) === canonicalOfStored(stored, DERIVED_TOO)

/**
 * Works on the run `runId` (claimed with `lease`; `claimedRow` as the claim answered it) until
 * it has finished or the lease is lost. Everything it starts lives in the scope it runs in.
 */
export const runWorker = (options: WorkerOptions, runId: string, lease: Lease, handle: WorkerHandle, claimedRow: StoredDocument, stored?: RunRecord) =>
  Effect.gen(function* () {
    const { store, compute, pool, provisioner, stepPermits, provisioningTimeoutMs } = options
    const workerScope = yield* Effect.scope
    const signals = handle.signals
    const provisioning = new Set<string>()
    const followers = new Map<string, Fiber.RuntimeFiber<void, never>>()
    const placing = new Map<string, Fiber.RuntimeFiber<void, never>>()
    const pendingEvents: Array<{ submissionId: string; event: JobEvent }> = []
    const handed = new Set<string>()
    // Jobs whose follower waits for their instance's runner to start (nothing handed over yet).
    const startingRunner = new Set<string>()
    const offer = (signal: Signal) => Queue.offer(signals, signal).pipe(Effect.asVoid)

    // The lease is kept by the one renewal of every lease this replica holds (RunClaims), which
    // moves `trustedUntil` on, or says LeaseLost when another replica took the run over.
    const leaseTrusted = () => Date.now() < handle.trustedUntil
    // Wakes when the trust would run out (a renewal moves that on): no periodic timer.
    const watchTrust: Effect.Effect<void> = Effect.suspend(() =>
      leaseTrusted()
        ? Effect.sleep(Duration.millis(Math.max(1, handle.trustedUntil - Date.now()))).pipe(Effect.zipRight(watchTrust))
        : offer({ _tag: "LeaseLost" })
    )
    yield* Effect.forkIn(watchTrust, workerScope)

    /** Computes every transition on the run as last read or written, writes it, and returns the effects to carry out. */
    // The row the claim answered serves as the first read. Afterwards the row this worker
    // last read or wrote is used again as long as nobody else is known to have written the
    // run since (a change-feed notice that is not an echo of our own write, or a timed wake,
    // makes the next step read afresh): every write names the version it was computed from,
    // so a write from a stale row fails with Conflict and the step is computed again on a
    // fresh read. A row still at the version last decoded here is not decoded again.
    let unread: StoredDocument | undefined = claimedRow
    // A record the claim's caller already held (the run just stored by this process) is the
    // claimed row's: its first read needs no decode.
    let known: { readonly row: StoredDocument; readonly record: RunRecord } | undefined = stored === undefined ? undefined : { row: claimedRow, record: stored }
    let mustRead = false
    const readRow = Effect.gen(function* () {
      const cached = unread === undefined && !mustRead ? known : undefined
      if (cached !== undefined) return cached
      const row = unread ?? (yield* store.runs.get(runId))
      unread = undefined
      mustRead = false
      handle.knownVersion = Math.max(handle.knownVersion, row.version)
      if (known !== undefined && known.row.version === row.version) return { row, record: known.record }
      const { record } = yield* decodeRow(row)
      known = { row, record }
      return known
    })

    const step = Effect.gen(function* () {
      for (let attempt = 0; ; attempt++) {
        const { row, record } = yield* readRow
        const now = Date.now()
        let run = record.run
        let stopRequest = record.stopRequest
        let wakeAt = record.wakeAt
        const submittedToRunner = new Set([...record.submittedToRunner, ...handed])
        const jobEffects: Array<JobEffect> = []

        const applyJob = (submissionId: string, event: JobEvent) => {
          const found = jobOfSubmission(run, submissionId)
          if (!found) return
          const t = transitionJob(found.job, event, now)
          if (t._tag === "Applied") {
            run = withJob(run, found.index, t.entity)
            jobEffects.push(...t.effects)
          }
        }
        const applyRun = (event: RunEvent) => {
          const t = transitionRun(run, event, now, { newSubmissionId: () => crypto.randomUUID() })
          if (t._tag !== "Applied") return
          run = t.entity
          for (const effect of t.effects) {
            if (effect._tag === "StopJob") {
              applyJob(effect.jobSubmissionId, JobEvent.StopRequested({ abort: effect.abort, reason: effect.reason as any }))
            } else if (effect._tag === "Resubmit") {
              wakeAt = effect.at
            }
          }
        }

        if (stopRequest !== undefined) {
          applyRun(RunEvent.StopRequested({ abort: stopRequest.abort }))
          stopRequest = undefined
        }
        for (const { submissionId, event } of pendingEvents) applyJob(submissionId, event)
        // Replicas the autoscaler drained and asked to stop.
        for (const submissionId of record.scaleDown ?? []) applyJob(submissionId, JobEvent.StopRequested({ abort: false, reason: "scaled_down" }))
        // Deadlines that passed.
        for (const job of run.jobs) {
          const sub = latestSubmission(job)
          if (!sub) continue
          const stopAt = stopDeadline(job)
          if (stopAt !== null && stopAt <= now) applyJob(sub.id, JobEvent.StopDurationExceeded())
          const provAt = provisioningDeadline(job, provisioningTimeoutMs)
          if (provAt !== null && provAt <= now) applyJob(sub.id, JobEvent.ProvisioningTimeout())
          const maxAt = maxDurationDeadline(job)
          // The runner enforces max_duration; this catches a runner that does not.
          if (maxAt !== null && maxAt + 30_000 <= now) applyJob(sub.id, JobEvent.MaxDurationExceeded())
        }
        if (run.status === "pending" && wakeAt !== undefined && wakeAt <= now) {
          wakeAt = undefined
          applyRun(RunEvent.RetryDue())
        }
        // Settle: job changes may change the run, which may stop or add jobs.
        for (let i = 0; i < 4; i++) {
          const before = run
          applyRun(RunEvent.JobsChanged())
          if (run === before) break
        }
        // New submissions get an instance.
        if (!isRunStatusFinished(run.status) && run.status !== "terminating") {
          for (const job of run.jobs) {
            const sub = latestSubmission(job)
            if (sub && isPlacing(sub) && !provisioning.has(sub.id)) applyJob(sub.id, JobEvent.Claimed())
          }
        }

        const next: RunRecord = { run, stopRequest, wakeAt, submittedToRunner: [...submittedToRunner] }
        const encoded = encodeRecord(next)
        // Only a real change is written: bumping `last_processed_at` alone would wake every
        // follower of the run (and this worker) for nothing.
        if (jobEffects.length === 0 && sameIgnoringProcessedAt(encoded, row.doc)) {
          return { record: next, effects: jobEffects }
        }
        // Taking a submitted job changes nothing but `last_processed_at` (and the derived
        // `latest_job_submission`): while the lease is trusted (no other replica can hold
        // the run) there is nothing to write before provisioning. Every other effect is
        // acted on only after its write.
        if (jobEffects.length > 0 && jobEffects.every((e) => e._tag === "ProvisionInstance") && leaseTrusted() && sameButDerived(encoded, row.doc)) {
          return { record: next, effects: jobEffects }
        }
        handle.writingFrom = row.version
        const saved = yield* store.runs
          .update(runId, { status: run.status, doc: encoded }, { lease: lease.token, expectedVersion: row.version })
          .pipe(Effect.either, Effect.ensuring(Effect.sync(() => (handle.writingFrom = undefined))))
        if (saved._tag === "Right") {
          faultPoint(isRunStatusFinished(run.status) ? "run.finished" : "run.written")
          handle.knownVersion = Math.max(handle.knownVersion, saved.right.version)
          known = { row: saved.right, record: next }
          pendingEvents.length = 0
          return { record: next, effects: jobEffects }
        }
        if (saved.left.reason !== "Conflict" || attempt >= 20) return yield* Effect.fail(saved.left)
        mustRead = true
      }
    })

    /** Carries out the effects of a written step. */
    const carryOut = (record: RunRecord, effects: ReadonlyArray<JobEffect>) =>
      Effect.forEach(effects, (effect) => {
        const run = record.run
        switch (effect._tag) {
          case "ProvisionInstance": {
            const found = jobOfSubmission(run, effect.jobSubmissionId)
            if (!found || provisioning.has(effect.jobSubmissionId)) return Effect.void
            provisioning.add(effect.jobSubmissionId)
            const submissionId = effect.jobSubmissionId
            // Once placed, the event is queued without a break: an interruption before that is
            // the placement's own (it gives back what it took), after it the queue has it.
            return Effect.uninterruptibleMask((restore) =>
              restore(provisioner.place(run, found.job, submissionId, (message) =>
                offer({ _tag: "Job", submissionId, event: JobEvent.ProvisioningPending({ message }) }))).pipe(
                Effect.flatMap((event) => offer({ _tag: "Job", submissionId, event }))
              )
            ).pipe(
              Effect.ensuring(Effect.sync(() => placing.delete(submissionId))),
              Effect.forkIn(workerScope),
              Effect.tap((fiber) => Effect.sync(() => placing.set(submissionId, fiber))),
              Effect.asVoid
            )
          }
          case "SubmitToRunner":
            return startFollower(run, effect.jobSubmissionId, effect.provisioningData, record.submittedToRunner.includes(effect.jobSubmissionId))
          case "StopRunner": {
            const found = jobOfSubmission(run, effect.jobSubmissionId)
            const pd = found && latestSubmission(found.job)?.jobProvisioningData
            if (!pd) return Effect.void
            // The runner is still starting on its instance and has no job to stop: the wait for it
            // ends, and the job with it (its instance is released: one made per job is terminated).
            const waiting = startingRunner.has(effect.jobSubmissionId) ? followers.get(effect.jobSubmissionId) : undefined
            if (waiting !== undefined) {
              const submissionId = effect.jobSubmissionId
              return Fiber.interrupt(waiting).pipe(
                Effect.zipRight(Effect.sync(() => startingRunner.delete(submissionId))),
                Effect.zipRight(offer({ _tag: "Job", submissionId, event: JobEvent.RunnerFailed({ reason: "executor_error", message: "stopped while its runner was starting" }) }))
              )
            }
            // A runner that never answers does not hold the stop forever: its follower ends
            // the job as unreachable meanwhile.
            return withRunner(compute, run.projectName, pd, (client) => stopJob(client, effect.abort)).pipe(
              Effect.timeoutFail({ duration: Duration.seconds(STOP_TIMEOUT_SECONDS), onTimeout: () => new Error(`the runner did not answer the stop request within ${STOP_TIMEOUT_SECONDS}s`) }),
              Effect.catchAll((e) => Effect.logWarning(`run ${run.runSpec.runName}: stop failed: ${errorMessage(e)}`)),
              Effect.forkIn(workerScope),
              Effect.asVoid
            )
          }
          case "ReleaseInstance":
            return pool.release(effect.instanceId).pipe(Effect.zipRight(provisioner.signalCapacity))
          case "TerminateInstance":
            return pool.terminate(run.projectName, effect.instanceId, effect.provisioningData, "job ended on an unhealthy instance").pipe(
              Effect.zipRight(provisioner.signalCapacity)
            )
        }
      }, { discard: true })

    /** Hands the job to its runner (unless a previous owner did) and follows its events and logs. */
    const startFollower = (run: Run, submissionId: string, pd: JobProvisioningData, alreadyHanded: boolean, resumed = false) =>
      Effect.gen(function* () {
        if (followers.has(submissionId)) return
        const found = jobOfSubmission(run, submissionId)
        if (!found) return
        const follower = follow(options.follower, { run, submissionId, spec: found.job.jobSpec, pd, alreadyHanded, resumed, leaseTrusted }, {
          jobEvent: (event) => offer({ _tag: "Job", submissionId, event }),
          handedOver: offer({ _tag: "HandedToRunner", submissionId }),
          runnerStarting: (starting) => Effect.sync(() => (starting ? startingRunner.add(submissionId) : startingRunner.delete(submissionId)))
        }).pipe(Effect.ensuring(offer({ _tag: "FollowerDone", submissionId })))
        const fiber = yield* Effect.forkIn(follower, workerScope)
        followers.set(submissionId, fiber)
      })

    /** The earliest deadline of the run's jobs and its retry, for the next timed wake-up. */
    const nextDeadline = (record: RunRecord): number | undefined => {
      const times: Array<number> = []
      for (const job of record.run.jobs) {
        for (const t of [stopDeadline(job), provisioningDeadline(job, provisioningTimeoutMs)]) if (t !== null) times.push(t)
        const maxAt = maxDurationDeadline(job)
        if (maxAt !== null) times.push(maxAt + 30_000)
      }
      if (record.wakeAt !== undefined) times.push(record.wakeAt)
      return times.length === 0 ? undefined : Math.min(...times)
    }

    // On takeover: resume following jobs already on instances. (The claimed row is decoded
    // once: the first step reuses it.)
    {
      const { record } = yield* readRow
      for (const job of record.run.jobs) {
        const sub = latestSubmission(job)
        if (sub?.jobProvisioningData && !isJobStatusFinished(sub.status) && sub.status !== "submitted") {
          yield* startFollower(record.run, sub.id, sub.jobProvisioningData, record.submittedToRunner.includes(sub.id), true)
        }
      }
    }

    let finishedAt: number | undefined
    // Signals taken from the queue but never applied (the lease was lost).
    const unapplied: Array<Signal> = []
    while (true) {
      const { record, effects } = yield* stepPermits.withPermit(step)
      yield* carryOut(record, effects)
      yield* Deferred.succeed(handle.started, undefined)
      for (const job of record.run.jobs) {
        const sub = latestSubmission(job)
        if (sub && !isPlacing(sub)) provisioning.delete(sub.id)
      }
      if (isRunStatusFinished(record.run.status)) {
        // Let followers deliver the last log lines, then let go of the run.
        finishedAt ??= Date.now()
        if (followers.size === 0 || Date.now() - finishedAt > 30_000) break
      }
      const deadline = nextDeadline(record)
      const waitMs = deadline === undefined ? (finishedAt !== undefined ? 1_000 : 60_000) : Math.max(0, deadline - Date.now()) + 5
      const signal = yield* Queue.take(signals).pipe(Effect.timeout(Duration.millis(Math.min(waitMs, 60_000))), Effect.option)
      const batch = [...(Option.isSome(signal) ? [signal.value] : []), ...(yield* Queue.takeAll(signals))]
      // A job just handed to its runner is about to report that it runs: waiting a moment
      // for that report writes both in one step instead of two (a write per job saved).
      if (batch.some((s) => s._tag === "HandedToRunner") && !batch.some((s) => s._tag === "Job" && RUNNER_EVENTS.has(s.event._tag))) {
        const more = yield* Queue.take(signals).pipe(Effect.timeout(Duration.millis(HANDOVER_COALESCE_MS)), Effect.option)
        if (Option.isSome(more)) batch.push(more.value, ...(yield* Queue.takeAll(signals)))
      }
      // Someone else wrote the run (or nothing woke it for a while): read it afresh.
      // A change that came with the row it wrote (the autoscaler's new replicas) is taken as
      // read: the step computed from it is written against its version, so a later write by
      // anyone else makes that write conflict and the step read the run afresh.
      // So is the row of a write of this process that the change feed brought (decoded, not read).
      const changes = batch.flatMap((s) => (s._tag === "Changed" ? [s] : []))
      if (batch.length === 0 || changes.some((s) => s.known === undefined && s.row === undefined)) mustRead = true
      else {
        for (const { known: given, row } of changes) {
          const version = given?.row.version ?? row!.version
          const newest = Math.max(known?.row.version ?? -1, unread?.version ?? -1)
          if (version <= newest) continue
          if (given !== undefined) {
            known = given
            unread = undefined
          } else unread = row
          handle.knownVersion = Math.max(handle.knownVersion, version)
        }
      }
      if (batch.some((s) => s._tag === "LeaseLost")) {
        yield* Effect.logWarning(`run ${runId}: lease lost, another replica took over`)
        unapplied.push(...batch)
        break
      }
      for (const s of batch) {
        if (s._tag === "Job" && RUNNER_EVENTS.has(s.event._tag)) {
          const found = jobOfSubmission(record.run, s.submissionId)
          const id = found && latestSubmission(found.job)?.instanceId
          if (id !== undefined) pool.noteRunnerSeen(id)
        }
        if (s._tag === "Job") pendingEvents.push({ submissionId: s.submissionId, event: s.event })
        else if (s._tag === "HandedToRunner") handed.add(s.submissionId)
        else if (s._tag === "FollowerDone") followers.delete(s.submissionId)
      }
    }
    // Placements still under way end here (one that took an instance gives it back), and an
    // instance placed for this run whose event this worker will not apply (the run ended
    // first, or another replica owns it now and places its jobs afresh) goes back to the pool:
    // nothing else would ever free it.
    yield* Fiber.interruptAll([...placing.values()])
    for (const s of [...unapplied, ...(yield* Queue.takeAll(signals))]) {
      if (s._tag === "Job" && s.event._tag === "Provisioned" && s.event.instanceId !== undefined) {
        yield* pool.release(s.event.instanceId)
      }
    }
  })
