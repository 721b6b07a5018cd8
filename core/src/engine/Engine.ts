/**
 * The engine: the effectful driver of the pure run and job lifecycles. It is event-driven: a
 * change to a run (a submission, a stop request) or a runner report wakes the run's worker at
 * once; a slow periodic resync only picks up runs nobody holds (after a replica died) and
 * terminates idle instances. Each active run is worked on by one worker in one replica, which
 * holds the run's lease while it lives; a worker computes transitions on a fresh read, writes
 * them against the row's version and only then carries out their effects.
 */
import { Cause, Context, Deferred, Duration, Effect, Exit, Fiber, Layer, Option, Queue, Schema, Scope, Stream } from "effect"
import * as os from "node:os"
import { Instance, instanceIdleDeadline } from "../domain/Instance.ts"
import { Job, JobProvisioningData, type JobSpec, latestSubmission } from "../domain/Job.ts"
import type { InstanceOffer } from "../domain/Offer.ts"
import { Run } from "../domain/Run.ts"
import { isJobStatusFinished, isRunStatusFinished, type RunStatus } from "../domain/Status.ts"
import * as FifoSemaphore from "../internal/FifoSemaphore.ts"
import { BlobStore } from "../ports/BlobStore.ts"
import type { RunnerTransportError } from "../ports/RunnerTransport.ts"
import { StateStore, type Lease, type NewLogEvent, type StateStoreError, type StoredDocument } from "../ports/StateStore.ts"
import { Compute } from "./Compute.ts"
import {
  JobEffect,
  JobEvent,
  maxDurationDeadline,
  provisioningDeadline,
  stopDeadline,
  transitionJob
} from "./JobLifecycle.ts"
import { explainNoOffers, offersForJob } from "./Planner.ts"
import { decodeRow, encodeRecord, type RunRecord } from "./RunRecord.ts"
import { RunEffect, RunEvent, transitionRun } from "./RunLifecycle.ts"
import { followEvents, jobEventOfRunnerState, noteHealthy, type RunnerStreamEvent, startFollowing, stopJob, waitHealthy } from "./RunnerSession.ts"

export interface EngineOptions {
  /** Names this replica in leases; unique per process by default. */
  readonly owner?: string
  /** How long a claim lasts without renewal. Default 30 s. */
  readonly leaseMs?: number
  /** How often unheld runs are picked up and idle instances checked. Default 15 s. */
  readonly resyncMs?: number
  /** At most this many runs take a step (read, decide, write) at once. Default 32. */
  readonly stepConcurrency?: number
  /** How long a runner may take to answer on a new instance. Default 10 min (upstream). */
  readonly provisioningTimeoutMs?: number
  /** How long a runner may stay unreachable before its job ends as instance_unreachable. Default 2 min. */
  readonly unreachableMs?: number
  /** Seconds an instance stays idle before it is terminated, unless the run says otherwise. Default 300. */
  readonly defaultIdleDurationSeconds?: number
  /**
   * An idle instance whose runner reported to this engine less than this long ago is reused
   * without asking its health check first. Default 5 s; 0 always asks.
   */
  readonly runnerFreshMs?: number
  /** How many jobs may plan and provision at the same time. Default 16. */
  readonly provisioningConcurrency?: number
}

export interface EngineService {
  readonly owner: string
  /** Wakes the worker of a run now (the change feed does this too; this saves a round trip). */
  readonly wake: (runId: string) => Effect.Effect<void>
  /** Runs this replica works on right now. */
  readonly activeRuns: Effect.Effect<ReadonlyArray<string>>
}

export class Engine extends Context.Tag("@dstack-ts/core/Engine")<Engine, EngineService>() {}

export const ACTIVE_RUN_STATUSES: ReadonlyArray<RunStatus> = ["pending", "submitted", "provisioning", "running", "terminating"]

/** A provisioning attempt found everything that fits taken: try again when capacity frees up. */
interface WaitForCapacity {
  readonly _tag: "WaitForCapacity"
  readonly reason: string
}

/** What wakes a worker. */
type Signal =
  | { readonly _tag: "Changed" }
  | { readonly _tag: "Job"; readonly submissionId: string; readonly event: JobEvent }
  | { readonly _tag: "HandedToRunner"; readonly submissionId: string }
  | { readonly _tag: "FollowerDone"; readonly submissionId: string }
  | { readonly _tag: "LeaseLost" }

/** Job events that mean the instance's runner answered just now. */
const RUNNER_EVENTS: ReadonlySet<string> = new Set(["RunnerPulling", "RunnerRunning", "RunnerExited", "RunnerFailed"])

const decodeInstance = Schema.decodeUnknown(Instance)
const encodeInstance = Schema.encodeSync(Instance)
const decodeProvisioning = Schema.decodeUnknown(JobProvisioningData)
const encodeProvisioning = Schema.encodeSync(JobProvisioningData)

const jobOfSubmission = (run: Run, submissionId: string): { readonly index: number; readonly job: Job } | undefined => {
  const index = run.jobs.findIndex((job) => latestSubmission(job)?.id === submissionId)
  return index < 0 ? undefined : { index, job: run.jobs[index] }
}

const withJob = (run: Run, index: number, job: Job): Run =>
  new Run({ ...run, jobs: run.jobs.map((j, i) => (i === index ? job : j)) }, { disableValidation: true })

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

/** Jobs with the same key find the same capacity: one that finds none speaks for the others. */
const capacityKey = (run: Run, job: Job): string => {
  const config = run.runSpec.configuration
  try {
    return JSON.stringify([run.projectName, job.jobSpec.requirements, config.backends, config.regions, config.instanceTypes])
  } catch {
    return `${run.id}/${job.jobSpec.jobName}`
  }
}

const errorMessage = (e: unknown): string =>
  e && typeof e === "object" && "message" in e && typeof (e as any).message === "string" && (e as any).message !== ""
    ? (e as any).message
    : String((e as any)?.reason ?? e)

export const make = (
  options: EngineOptions = {}
): Effect.Effect<EngineService, StateStoreError, StateStore | Compute | BlobStore | Scope.Scope> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const compute = yield* Compute
    const blobs = yield* BlobStore
    const engineScope = yield* Effect.scope
    const owner = options.owner ?? `${os.hostname()}-${process.pid}-${crypto.randomUUID().slice(0, 8)}`
    const leaseMs = options.leaseMs ?? 30_000
    const resyncMs = options.resyncMs ?? 15_000
    const provisioningTimeoutMs = options.provisioningTimeoutMs ?? 10 * 60_000
    const unreachableMs = options.unreachableMs ?? 2 * 60_000
    const defaultIdle = options.defaultIdleDurationSeconds ?? 300
    /**
     * The workers of this replica, by run id. A change-feed notice carries the run's version
     * after the change: one the worker already holds (its own write, the row it read) is
     * dropped instead of waking it to read the row again.
     */
    const workers = new Map<string, WorkerHandle>()
    // A lease is trusted only until shortly before it would expire unrenewed (a slow database
    // can delay a renewal): past that, its worker stops on its own, and its followers stop
    // appending logs, before another replica could have claimed the run — so the two never
    // follow the same runner at once.
    const safetyMs = Math.max(500, Math.floor(leaseMs / 5))
    const runnerFreshMs = options.runnerFreshMs ?? 5_000
    // At most this many jobs plan and provision at once: thousands of queued runs taken at
    // once (after a restart, a burst of submissions) would otherwise all wait on the same
    // database queue together, each getting slower, until their leases ran out unrenewed.
    // (Our FIFO semaphore, not Effect's: that one wakes every waiter on each release, which with
    // thousands of waiting workers stalled the event loop for seconds — 1,000 waiters through
    // one permit take ~8 s there, ~0.1 s here.)
    const provisionPermits = yield* FifoSemaphore.make(options.provisioningConcurrency ?? 16)
    // At most this many workers read, decide and write at once. Thousands of runs taken at once
    // would otherwise each put a write on the database queue together, and the one renewal of
    // every lease (renewAll) would wait behind all of them until the leases ran out.
    const stepPermits = yield* FifoSemaphore.make(options.stepConcurrency ?? 32)
    /** When the runner of an instance (by instance id) last reported to a follower here. */
    const runnerSeenAt = new Map<string, number>()
    // Jobs waiting for capacity, oldest first. When capacity frees up (an instance of this
    // replica is released or terminated, or every couple of seconds for capacity freed
    // elsewhere) a pass gives the waiters a turn one at a time: each plans again and says
    // whether it got an instance. A waiter that finds nothing makes the pass skip the others
    // with the same requirements (they would find nothing either), so a pass costs one plan per
    // placed job plus one per distinct kind of job still waiting — not one per waiter.
    interface Waiter {
      readonly seq: number
      readonly key: string
      readonly turn: Deferred.Deferred<Deferred.Deferred<boolean>>
    }
    const waiting: Array<Waiter> = []
    let waiterSeq = 0
    let passRunning = false
    let passAgain = false
    const addWaiter = (w: Waiter) => {
      let i = waiting.length
      while (i > 0 && waiting[i - 1].seq > w.seq) i--
      waiting.splice(i, 0, w)
    }
    const removeWaiter = (w: Waiter) => {
      const i = waiting.indexOf(w)
      if (i >= 0) waiting.splice(i, 1)
    }
    const capacityPass: Effect.Effect<void> = Effect.gen(function* () {
      const failedKeys = new Set<string>()
      for (const w of [...waiting]) {
        if (failedKeys.has(w.key) || !waiting.includes(w)) continue
        removeWaiter(w)
        const report = yield* Deferred.make<boolean>()
        yield* Deferred.succeed(w.turn, report)
        // A waiter interrupted meanwhile (its run ended) never reports: do not wait forever.
        const placed = yield* Deferred.await(report).pipe(Effect.timeout(Duration.seconds(30)), Effect.orElseSucceed(() => false))
        if (!placed) failedKeys.add(w.key)
      }
    })
    const signalCapacity: Effect.Effect<void> = Effect.suspend(() => {
      if (waiting.length === 0) return Effect.void
      if (passRunning) {
        passAgain = true
        return Effect.void
      }
      passRunning = true
      const loop: Effect.Effect<void> = Effect.suspend(() => {
        passAgain = false
        return capacityPass.pipe(Effect.flatMap(() => (passAgain && waiting.length > 0 ? loop : Effect.void)))
      })
      return loop.pipe(
        Effect.ensuring(Effect.sync(() => (passRunning = false))),
        Effect.forkIn(engineScope),
        Effect.asVoid
      )
    })

    // -------------------------------------------------------------------------------------
    // Instances

    const updateInstance = (id: string, f: (instance: Instance, raw: Record<string, unknown>) => Record<string, unknown>) =>
      Effect.gen(function* () {
        for (let attempt = 0; attempt < 20; attempt++) {
          const row = yield* store.instances.get(id)
          const instance = yield* decodeInstance(row.doc).pipe(Effect.orDie)
          const next = f(instance, row.doc as Record<string, unknown>)
          const result = yield* store.instances
            .update(id, { status: String(next.status), doc: next }, { expectedVersion: row.version })
            .pipe(Effect.either)
          if (result._tag === "Right") return
          if (result.left.reason !== "Conflict") return yield* Effect.fail(result.left)
        }
      })

    // A project whose plan found no idle instance is not asked again for NO_IDLE_TTL_MS, unless
    // this engine releases one meanwhile: in a burst of placements every plan would otherwise
    // look up the same empty list. (An instance another replica frees is seen that much later.)
    const noIdleSince = new Map<string, number>()
    let releases = 0
    const releaseInstance = (instanceId: string | undefined) =>
      instanceId === undefined
        ? Effect.void
        : updateInstance(instanceId, (instance, raw) =>
          instance.status === "busy"
            ? { ...raw, ...encodeInstance(new Instance({ ...instance, status: "idle", jobName: undefined, lastJobProcessedAt: new Date() })) }
            : raw
        ).pipe(
          Effect.ensuring(Effect.sync(() => {
            releases++
            noIdleSince.clear()
          })),
          Effect.catchAll((e) => Effect.logWarning(`could not release instance ${instanceId}: ${errorMessage(e)}`))
        )

    const terminateInstance = (project: string, instanceId: string | undefined, pd: JobProvisioningData, reason: string) =>
      Effect.gen(function* () {
        const backend = yield* compute.backend(project, pd.backend)
        yield* backend.terminateInstance(pd.instanceId, pd.region, pd.backendData)
        if (instanceId !== undefined) {
          yield* updateInstance(instanceId, (instance, raw) => ({
            ...raw,
            ...encodeInstance(new Instance({ ...instance, status: "terminated", terminationReason: reason, jobName: undefined }))
          }))
        }
      }).pipe(Effect.catchAll((e) => Effect.logWarning(`could not terminate instance ${pd.instanceId}: ${errorMessage(e)}`)))

    /** Takes an idle instance for a job: the lease makes sure two runs never get the same one. */
    const takeIdleInstance = (offer: InstanceOffer, jobName: string) =>
      Effect.gen(function* () {
        const claimed = yield* store.instances.claim({ filter: { ids: [offer.instanceId!], statuses: ["idle"] }, owner, leaseMs: 30_000 })
        if (claimed.length === 0) return Option.none<{ pd: JobProvisioningData; instanceId: string }>()
        const row = claimed[0]
        const instance = yield* decodeInstance(row.doc).pipe(Effect.orDie)
        const pd = yield* decodeProvisioning((row.doc as any).provisioning_data).pipe(Effect.orDie)
        // A runner that died with a previous server process must not get the job: it is asked,
        // unless this engine heard from it moments ago (its last job's events).
        const seen = runnerSeenAt.get(row.id)
        const fresh = seen !== undefined && Date.now() - seen < runnerFreshMs
        const healthy = yield* compute.transport(pd.backend).pipe(
          Effect.flatMap((t) => t.connect({ hostname: pd.hostname ?? "", runnerPort: pd.runnerPort ?? 10999, ...(pd.sshPort ? { sshPort: pd.sshPort } : {}), username: pd.username, instanceId: pd.instanceId })),
          Effect.flatMap((client) => (fresh ? Effect.sync(() => noteHealthy(client)) : waitHealthy(client, 3_000))),
          Effect.scoped,
          Effect.isSuccess
        )
        const next = new Instance({ ...instance, status: healthy ? "busy" : "terminated", jobName: healthy ? jobName : undefined, ...(healthy ? {} : { terminationReason: "unreachable when reused" }) })
        yield* store.instances.update(row.id, { status: next.status, doc: { ...(row.doc as object), ...encodeInstance(next) } }, { lease: row.lease!.token })
        yield* store.instances.release(row.id, row.lease!.token).pipe(Effect.ignore)
        return healthy ? Option.some({ pd, instanceId: row.id }) : Option.none()
      })

    /** Creates an instance from a backend offer and records it as busy with the job. */
    const createInstance = (project: string, offer: InstanceOffer, run: Run, jobName: string) =>
      Effect.gen(function* () {
        const backend = yield* compute.backend(project, offer.backend)
        const id = crypto.randomUUID()
        const name = `${jobName}-${id.slice(0, 4)}`
        const idleDuration = run.runSpec.configuration.idleDuration
        const base = new Instance({
          id,
          projectName: project,
          backend: offer.backend,
          instanceType: offer.instance,
          name,
          jobName,
          status: "provisioning",
          created: new Date(),
          region: offer.region,
          price: offer.price,
          idleDuration: typeof idleDuration === "number" ? idleDuration : idleDuration === "off" ? null : defaultIdle
        })
        yield* store.instances.insert({ id, project, name, status: base.status, doc: encodeInstance(base) })
        const pd = yield* backend.createInstance(offer, { projectName: project, instanceName: name, instanceId: id, sshKeys: [] }).pipe(
          Effect.tapError((e) =>
            store.instances.update(id, {
              status: "terminated",
              doc: encodeInstance(new Instance({ ...base, status: "terminated", terminationReason: errorMessage(e) }))
            }).pipe(Effect.ignore)
          )
        )
        const ready = new Instance({
          ...base,
          status: "busy",
          ...(pd.hostname !== null ? { hostname: pd.hostname } : {}),
          ...(pd.runnerPort !== undefined ? { runnerPort: pd.runnerPort } : {}),
          ...(pd.sshPort !== undefined ? { sshPort: pd.sshPort } : {}),
          username: pd.username,
          backendInstanceId: pd.instanceId
        })
        yield* store.instances.update(id, { status: "busy", doc: { ...encodeInstance(ready), provisioning_data: encodeProvisioning(pd) } })
        return { pd, instanceId: id }
      })

    // -------------------------------------------------------------------------------------
    // Code

    const readCode = (project: string, spec: JobSpec, repoId: string) =>
      spec.repoCodeHash === undefined
        ? Effect.succeed(undefined)
        : store.codes.get(project, repoId, spec.repoCodeHash).pipe(
          Effect.flatMap((record) => blobs.getBytes(record.blobKey)),
          Effect.map((bytes): Uint8Array | undefined => bytes)
        )

    // -------------------------------------------------------------------------------------
    // A worker per run

    /** Starts the worker of a run this replica just claimed (`row` as the claim answered it). */
    const startWorker = (row: StoredDocument) =>
      Effect.gen(function* () {
        const runId = row.id
        const lease = row.lease!
        const signals = yield* Queue.unbounded<Signal>()
        const handle: WorkerHandle = { signals, knownVersion: row.version, writingFrom: undefined, token: lease.token, trustedUntil: Date.now() + leaseMs - safetyMs, started: yield* Deferred.make<void>() }
        workers.set(runId, handle)
        // Scoped: however the worker ends (lease lost, a failed write, interruption), its
        // followers, provisioning and renewal fibers end with it and before the lease is let go.
        yield* runWorker(runId, lease, handle, row).pipe(
          Effect.scoped,
          Effect.catchAllCause((cause) =>
            Cause.isInterruptedOnly(cause) ? Effect.void : Effect.logError(`run ${runId}: worker failed`, cause)
          ),
          Effect.ensuring(
            Effect.sync(() => workers.delete(runId)).pipe(
              Effect.zipRight(Deferred.succeed(handle.started, undefined)),
              Effect.zipRight(store.runs.release(runId, lease.token).pipe(Effect.ignore))
            )
          ),
          Effect.forkIn(engineScope)
        )
      })

    const runWorker = (runId: string, lease: Lease, handle: WorkerHandle, claimedRow: StoredDocument) =>
      Effect.gen(function* () {
        const workerScope = yield* Effect.scope
        const signals = handle.signals
        const provisioning = new Set<string>()
        const followers = new Map<string, Fiber.RuntimeFiber<void, never>>()
        const pendingEvents: Array<{ submissionId: string; event: JobEvent }> = []
        const handed = new Set<string>()
        const offer = (signal: Signal) => Queue.offer(signals, signal).pipe(Effect.asVoid)

        // The lease is kept by the engine's one renewal of every lease it holds (`renewAll`), which
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
        let known: { readonly row: StoredDocument; readonly record: RunRecord } | undefined
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
                if (sub && sub.status === "submitted" && !provisioning.has(sub.id)) applyJob(sub.id, JobEvent.Claimed())
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
                const submittedAt = latestSubmission(found.job)?.submittedAt.getTime() ?? Date.now()
                let report: Deferred.Deferred<boolean> | undefined
                const answer = (placed: boolean) => Effect.suspend(() => (report === undefined ? Effect.void : Deferred.succeed(report, placed)))
                return Effect.gen(function* () {
                  const seq = waiterSeq++
                  const key = capacityKey(run, found.job)
                  while (true) {
                    const event = yield* provisionPermits.withPermit(provision(run, found.job, effect.jobSubmissionId))
                    if (event._tag !== "WaitForCapacity") {
                      yield* answer(true)
                      return yield* offer({ _tag: "Job", submissionId: effect.jobSubmissionId, event })
                    }
                    // Wait for a turn when capacity frees up, or until the provisioning timeout
                    // (then `provision` answers ProvisioningTimeout).
                    yield* answer(false)
                    const waiter: Waiter = { seq, key, turn: yield* Deferred.make<Deferred.Deferred<boolean>>() }
                    addWaiter(waiter)
                    const turn = yield* Deferred.await(waiter.turn).pipe(
                      Effect.timeout(Duration.millis(Math.max(0, submittedAt + provisioningTimeoutMs - Date.now()) + 5)),
                      Effect.option,
                      Effect.ensuring(Effect.sync(() => removeWaiter(waiter)))
                    )
                    report = Option.getOrUndefined(turn)
                  }
                }).pipe(
                  Effect.ensuring(answer(false)),
                  Effect.forkIn(workerScope),
                  Effect.asVoid
                )
              }
              case "SubmitToRunner":
                return startFollower(run, effect.jobSubmissionId, effect.provisioningData, record.submittedToRunner.includes(effect.jobSubmissionId))
              case "StopRunner": {
                const found = jobOfSubmission(run, effect.jobSubmissionId)
                const pd = found && latestSubmission(found.job)?.jobProvisioningData
                if (!pd) return Effect.void
                return withRunner(pd, (client) => stopJob(client, effect.abort)).pipe(
                  Effect.catchAll((e) => Effect.logWarning(`run ${run.runSpec.runName}: stop failed: ${errorMessage(e)}`)),
                  Effect.forkIn(workerScope),
                  Effect.asVoid
                )
              }
              case "ReleaseInstance":
                return releaseInstance(effect.instanceId).pipe(Effect.zipRight(signalCapacity))
              case "TerminateInstance":
                return terminateInstance(run.projectName, effect.instanceId, effect.provisioningData, "job ended on an unhealthy instance").pipe(
                  Effect.zipRight(signalCapacity)
                )
            }
          }, { discard: true })

        const withRunner = <A, E>(pd: JobProvisioningData, f: (client: import("../ports/RunnerTransport.ts").RunnerClient) => Effect.Effect<A, E, Scope.Scope>) =>
          compute.transport(pd.backend).pipe(
            Effect.flatMap((transport) =>
              transport.connect({
                hostname: pd.hostname ?? "",
                runnerPort: pd.runnerPort ?? 10999,
                ...(pd.sshPort !== undefined ? { sshPort: pd.sshPort } : {}),
                username: pd.username,
                instanceId: pd.instanceId
              })
            ),
            Effect.flatMap(f),
            Effect.scoped
          )

        /** Finds an instance for a submission: an idle one, else a new one from the cheapest offer that works. */
        const provision = (run: Run, job: Job, submissionId: string): Effect.Effect<JobEvent | WaitForCapacity> =>
          Effect.gen(function* () {
            const config = run.runSpec.configuration
            const noIdleAt = noIdleSince.get(run.projectName)
            const skipIdle = noIdleAt !== undefined && Date.now() - noIdleAt < NO_IDLE_TTL_MS
            const releasesBefore = releases
            const planAt = Date.now()
            const offers = yield* offersForJob(run.projectName, job.jobSpec.requirements, {
              backends: config.backends,
              regions: config.regions,
              instanceTypes: config.instanceTypes
            }, { skipIdle }).pipe(Effect.provideService(StateStore, store), Effect.provideService(Compute, compute))
            if (offers.idleInstances === 0 && releases === releasesBefore) noIdleSince.set(run.projectName, planAt)
            else if (offers.idleInstances !== undefined) noIdleSince.delete(run.projectName)
            const errors: Array<string> = []
            let busy = 0
            for (const candidate of offers.offers.slice(0, 10)) {
              const got = candidate.instanceId !== undefined
                ? yield* takeIdleInstance(candidate, job.jobSpec.jobName).pipe(
                  // Taken by another job since the plan (or found dead and terminated): capacity
                  // that is busy right now, not a failure — the job waits for its turn.
                  Effect.tap((taken) => Effect.sync(() => Option.isNone(taken) && busy++)),
                  Effect.catchAll((e) => Effect.as(Effect.sync(() => errors.push(errorMessage(e))), Option.none()))
                )
                : yield* createInstance(run.projectName, candidate, run, job.jobSpec.jobName).pipe(
                  Effect.map(Option.some),
                  Effect.catchAll((e) =>
                    Effect.as(
                      Effect.sync(() => {
                        if (e._tag === "BackendError" && e.reason === "NoCapacity") busy++
                        errors.push(`${candidate.backend}: ${errorMessage(e)}`)
                      }),
                      Option.none()
                    )
                  )
                )
              if (Option.isSome(got)) return JobEvent.Provisioned({ provisioningData: got.value.pd, instanceId: got.value.instanceId })
            }
            const why = offers.offers.length === 0 ? explainNoOffers(offers) : `every offer failed: ${errors.join("; ")}`
            // Something fits but is taken right now (a backend at its instance limit, an offer
            // only unavailable): the job waits for capacity, as upstream's jobs wait for a fleet
            // instance, until the provisioning timeout (waiting_instance_limit_exceeded).
            const onlyTaken =
              (offers.offers.length > 0 && busy === offers.offers.slice(0, 10).length) ||
              (offers.offers.length === 0 && offers.excluded.some((ex) => ex.reasons.length > 0 && ex.reasons.every((r) => r.startsWith("availability:"))))
            if (onlyTaken) {
              const sub = latestSubmission(job)
              const waited = Date.now() - (sub?.submittedAt.getTime() ?? Date.now())
              if (waited >= provisioningTimeoutMs) return JobEvent.ProvisioningTimeout()
              return { _tag: "WaitForCapacity" as const, reason: why }
            }
            return JobEvent.NoCapacity({ message: why })
          }).pipe(
            Effect.catchAllCause((cause) => Effect.succeed(JobEvent.NoCapacity({ message: `planning failed: ${Cause.pretty(cause).split("\n")[0]}` })))
          )

        /** Hands the job to its runner (unless a previous owner did) and follows its events and logs. */
        const startFollower = (run: Run, submissionId: string, pd: JobProvisioningData, alreadyHanded: boolean) =>
          Effect.gen(function* () {
            if (followers.has(submissionId)) return
            const found = jobOfSubmission(run, submissionId)
            if (!found) return
            const spec = found.job.jobSpec
            const follower = Effect.gen(function* () {
              let cursor = 0
              let unreachableSince: number | undefined
              // Stores a stream's logs and reports its states, chunk by chunk, until it ends.
              const consume = (events: Stream.Stream<RunnerStreamEvent, RunnerTransportError>) =>
                events.pipe(
                  // One chunk per read of the runner's stream: under heavy output a big batch
                  // and one append; a trickle goes out line by line without waiting.
                  Stream.runForEachChunk((chunk) =>
                    Effect.gen(function* () {
                      unreachableSince = undefined
                      const logs: Array<NewLogEvent> = []
                      let last = cursor
                      for (const event of chunk) {
                        if (event._tag === "Log") {
                          logs.push({ project: run.projectName, jobSubmissionId: submissionId, timestamp: new Date(event.log.timestamp), source: event.source, message: event.log.message })
                          last = Math.max(last, event.log.timestamp)
                        } else if (event._tag === "State") last = Math.max(last, event.state.timestamp)
                      }
                      if (logs.length > 0) {
                        // Without a trusted lease another replica may be following too.
                        if (!leaseTrusted()) return yield* Effect.interrupt
                        yield* store.logs.append(logs)
                      }
                      for (const event of chunk) {
                        if (event._tag === "State") {
                          const jobEvent = jobEventOfRunnerState(event.state)
                          if (jobEvent) yield* offer({ _tag: "Job", submissionId, event: jobEvent })
                        }
                      }
                      // Only what is stored moves the cursor: a reconnect resumes right after
                      // it, neither losing nor repeating a line.
                      cursor = last
                    }).pipe(Effect.uninterruptible)
                  )
                )
              if (alreadyHanded) {
                const last = yield* store.logs.poll({ project: run.projectName, jobSubmissionId: submissionId, descending: true, limit: 1 }).pipe(Effect.orElseSucceed(() => ({ events: [] as ReadonlyArray<{ timestamp: Date }> })))
                cursor = last.events[0]?.timestamp.getTime() ?? 0
              } else {
                const code = yield* readCode(run.projectName, spec, run.runSpec.repoId)
                const body = {
                  run: { id: run.id, runName: run.runSpec.runName, repoId: run.runSpec.repoId },
                  jobSpec: spec,
                  clusterInfo: { jobIps: [pd.internalIp ?? pd.hostname ?? ""], masterJobIp: pd.internalIp ?? pd.hostname ?? "", gpusPerJob: pd.instanceType.resources.gpus.length },
                  secrets: {}
                } as any
                // The hand-over answers with the job's event stream (one request; an older
                // runner is handed the job in steps and followed as before): follow it at once.
                // A failed hand-over fails the job; a stream that breaks afterwards is resumed
                // below like any other.
                const followed = yield* withRunner(pd, (client) =>
                  Effect.gen(function* () {
                    yield* waitHealthy(client, provisioningTimeoutMs)
                    const events = yield* startFollowing(client, body, code)
                    yield* offer({ _tag: "HandedToRunner", submissionId })
                    return yield* consume(events).pipe(Effect.either)
                  })
                )
                if (followed._tag === "Right") return
                unreachableSince ??= Date.now()
                yield* Effect.sleep(Duration.millis(500))
              }
              // Follow; reconnect from the last event after a broken connection.
              while (true) {
                const outcome = yield* withRunner(pd, (client) => consume(followEvents(client, cursor))).pipe(Effect.either)
                if (outcome._tag === "Right") return
                const now = Date.now()
                unreachableSince ??= now
                if (now - unreachableSince > unreachableMs) {
                  yield* offer({ _tag: "Job", submissionId, event: JobEvent.InstanceUnreachable() })
                  return
                }
                yield* Effect.sleep(Duration.millis(500))
              }
            }).pipe(
              Effect.catchAllCause((cause) =>
                Cause.isInterruptedOnly(cause)
                  ? Effect.interrupt
                  : offer({
                    _tag: "Job",
                    submissionId,
                    event: JobEvent.RunnerFailed({ reason: "executor_error", message: `could not hand the job to its runner: ${Cause.squash(cause) instanceof Error ? (Cause.squash(cause) as Error).message : errorMessage(Cause.squash(cause))}` })
                  })
              ),
              Effect.ensuring(offer({ _tag: "FollowerDone", submissionId })),
              Effect.asVoid
            )
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
              yield* startFollower(record.run, sub.id, sub.jobProvisioningData, record.submittedToRunner.includes(sub.id))
            }
          }
        }

        let finishedAt: number | undefined
        while (true) {
          const { record, effects } = yield* stepPermits.withPermit(step)
          yield* carryOut(record, effects)
          yield* Deferred.succeed(handle.started, undefined)
          for (const job of record.run.jobs) {
            const sub = latestSubmission(job)
            if (sub && sub.status !== "submitted") provisioning.delete(sub.id)
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
          if (batch.length === 0 || batch.some((s) => s._tag === "Changed")) mustRead = true
          if (batch.some((s) => s._tag === "LeaseLost")) {
            yield* Effect.logWarning(`run ${runId}: lease lost, another replica took over`)
            break
          }
          for (const s of batch) {
            if (s._tag === "Job" && RUNNER_EVENTS.has(s.event._tag)) {
              const found = jobOfSubmission(record.run, s.submissionId)
              const id = found && latestSubmission(found.job)?.instanceId
              if (id !== undefined) runnerSeenAt.set(id, Date.now())
            }
            if (s._tag === "Job") pendingEvents.push({ submissionId: s.submissionId, event: s.event })
            else if (s._tag === "HandedToRunner") handed.add(s.submissionId)
            else if (s._tag === "FollowerDone") followers.delete(s.submissionId)
          }
        }
      })

    // -------------------------------------------------------------------------------------
    // Claiming runs

    // A run being claimed right now (by `wake` and the change feed at once, typically): a
    // second claim would only fail; a change meanwhile is passed on once the worker is up,
    // unless the claim read that version already (a notice names the version it announces;
    // `wake` names none and always counts).
    const claiming = new Map<string, { changed: boolean; version: number }>()

    /** `version`: the run's version a change-feed notice announced, if it said. */
    const acquire = (runId: string, version?: number): Effect.Effect<void> =>
      Effect.gen(function* () {
        const running = workers.get(runId)
        if (running) return yield* Queue.offer(running.signals, { _tag: "Changed" })
        const inFlight = claiming.get(runId)
        if (inFlight) {
          if (version === undefined) inFlight.changed = true
          else inFlight.version = Math.max(inFlight.version, version)
          return
        }
        const mark = { changed: false, version: 0 }
        claiming.set(runId, mark)
        const claimed = yield* store.runs.claim({ filter: { ids: [runId], statuses: ACTIVE_RUN_STATUSES }, owner, leaseMs }).pipe(
          Effect.ensuring(Effect.sync(() => claiming.delete(runId)))
        )
        for (const row of claimed) if (!workers.has(row.id)) yield* startWorker(row)
        const started = workers.get(runId)
        const read = claimed.find((row) => row.id === runId)?.version ?? 0
        if (mark.changed || mark.version > read) {
          if (started) yield* Queue.offer(started.signals, { _tag: "Changed" })
          else yield* acquire(runId)
        }
      }).pipe(Effect.catchAll((e) => Effect.logWarning(`could not claim run ${runId}: ${errorMessage(e)}`)), Effect.asVoid)

    const resync = Effect.gen(function* () {
      // Every unheld active run, in batches (after a restart there may be thousands).
      // A batch at a time, each claimed once the last one's workers took their first step: runs
      // claimed faster than they can be worked on would hold leases nobody gets to renew in time.
      for (;;) {
        const claimed = yield* store.runs.claim({ filter: { statuses: ACTIVE_RUN_STATUSES }, owner, leaseMs, limit: RESYNC_BATCH })
        const started: Array<WorkerHandle> = []
        for (const row of claimed) {
          if (workers.has(row.id)) yield* store.runs.release(row.id, row.lease!.token).pipe(Effect.ignore)
          else {
            yield* startWorker(row)
            const handle = workers.get(row.id)
            if (handle !== undefined) started.push(handle)
          }
        }
        if (claimed.length < RESYNC_BATCH || started.length === 0) break
        yield* Effect.forEach(started, (h) => Deferred.await(h.started), { discard: true }).pipe(Effect.timeout(Duration.millis(leaseMs / 3)), Effect.ignore)
      }
      // Idle instances past their idle duration are terminated.
      const idle = yield* store.instances.list({ statuses: ["idle"] })
      const now = Date.now()
      for (const row of idle) {
        const instance = yield* decodeInstance(row.doc).pipe(Effect.option)
        if (Option.isNone(instance)) continue
        const i = instance.value
        const deadline = instanceIdleDeadline(i)
        if (deadline === null || deadline > now) continue
        const got = yield* store.instances.claim({ filter: { ids: [i.id], statuses: ["idle"] }, owner, leaseMs: 60_000 })
        if (got.length === 0) continue
        const pd = yield* decodeProvisioning((got[0].doc as any).provisioning_data).pipe(Effect.option)
        if (Option.isSome(pd)) yield* terminateInstance(i.projectName, i.id, pd.value, "idle_duration exceeded")
        else yield* store.instances.update(i.id, { status: "terminated" }, { lease: got[0].lease!.token }).pipe(Effect.ignore)
        yield* store.instances.release(i.id, got[0].lease!.token).pipe(Effect.ignore)
      }
    }).pipe(Effect.catchAll((e) => Effect.logWarning(`resync failed: ${errorMessage(e)}`)))

    // Every lease of this replica is renewed in one statement: a statement per run would put
    // thousands of renewals a minute on the database queue with thousands of active runs, and
    // renewals stuck behind each other are how leases run out under load.
    const renewAll = Effect.gen(function* () {
      if (workers.size === 0) return
      const held = [...workers.entries()].map(([id, handle]) => ({ id, token: handle.token, handle }))
      const asked = Date.now()
      const renewed = yield* store.runs.renewMany(held.map(({ id, token }) => ({ id, token })), leaseMs).pipe(Effect.either)
      // A failed renewal is not a lost lease: trust runs out on its own unless the next one works.
      if (renewed._tag === "Left") return yield* Effect.logWarning(`could not renew leases: ${errorMessage(renewed.left)}`)
      const kept = new Set(renewed.right.map((r) => r.id))
      for (const { id, handle } of held) {
        if (kept.has(id)) handle.trustedUntil = Math.max(handle.trustedUntil, asked + leaseMs - safetyMs)
        else yield* Queue.offer(handle.signals, { _tag: "LeaseLost" })
      }
    })
    yield* renewAll.pipe(
      Effect.delay(Duration.millis(Math.max(1000, Math.floor(leaseMs / 3)))),
      Effect.forever,
      Effect.forkIn(engineScope)
    )

    const changes = yield* store.subscribe
    yield* Queue.take(changes).pipe(
      Effect.flatMap((change) => {
        if (change.kind !== "run") return Effect.void
        const running = workers.get(change.id)
        const v = change.version
        // A version the worker holds, or the one its write in flight will make: nothing new.
        if (running !== undefined && v !== undefined && (v <= running.knownVersion || (running.writingFrom !== undefined && v === running.writingFrom + 1))) {
          return Effect.void
        }
        return acquire(change.id, v)
      }),
      Effect.forever,
      Effect.forkIn(engineScope)
    )
    // Capacity freed on another replica or by a backend on its own is found by a pass every
    // couple of seconds while jobs wait.
    yield* signalCapacity.pipe(
      Effect.delay(Duration.seconds(2)),
      Effect.forever,
      Effect.forkIn(engineScope)
    )
    yield* resync.pipe(
      Effect.zipRight(Effect.sleep(Duration.millis(resyncMs))),
      Effect.forever,
      Effect.forkIn(engineScope)
    )

    return {
      owner,
      wake: acquire,
      activeRuns: Effect.sync(() => [...workers.keys()])
    }
  })

/** How long a plan that found no idle instance in a project speaks for the next plans there. */
const NO_IDLE_TTL_MS = 250

/** How long a worker waits for a runner's first report after handing it a job, to write both at once. */
const HANDOVER_COALESCE_MS = 25

/** Runs claimed at once by a resync (after a restart there may be thousands waiting). */
const RESYNC_BATCH = 100

/** What the engine keeps of one of its workers. */
interface WorkerHandle {
  readonly signals: Queue.Queue<Signal>
  /** The newest version of the run the worker read or wrote: notices up to it are not news. */
  knownVersion: number
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

/** The engine as a layer: it runs for as long as the layer's scope is open. */
export const layer = (options: EngineOptions = {}): Layer.Layer<Engine, StateStoreError, StateStore | Compute | BlobStore> =>
  Layer.scoped(Engine, make(options))
