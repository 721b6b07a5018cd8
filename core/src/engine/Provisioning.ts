/**
 * Provisioning: finding a submitted job an instance. A plan lists what could run the job (idle
 * instances first, then backend offers by price); the first that can be had is taken or
 * created. When everything that fits is taken right now, the job waits for capacity to free up
 * instead of failing, until its provisioning timeout. Plans and placements run a bounded
 * number at a time. The outcome is a job event: `Provisioned`, `NoCapacity` (nothing fits, or
 * every offer failed), `ProvisioningTimeout`, or `ProvisioningFailed` when provisioning itself
 * broke (a store error, a bug): that is never reported as a lack of capacity.
 */
import { Cause, Deferred, Duration, Effect, FiberId, Option, type Scope } from "effect"
import { type Job, type JobProvisioningData, latestSubmission } from "../domain/Job.ts"
import type { Run } from "../domain/Run.ts"
import * as FifoSemaphore from "../internal/FifoSemaphore.ts"
import { faultPoint } from "../internal/Faults.ts"
import type { InstanceJob } from "../ports/Backend.ts"
import { StateStore, type StateStoreService } from "../ports/StateStore.ts"
import { Compute, type ComputeService } from "./Compute.ts"
import { errorMessage } from "./internal.ts"
import type { InstancePool } from "./InstancePool.ts"
import { JobEvent } from "./JobLifecycle.ts"
import { explainNoOffers, offersForJob, type PlanFilter } from "./Planner.ts"
import * as Placement from "./Placement.ts"

export interface Provisioner {
  /**
   * Finds the submission an instance and answers the job event that says how it went. While
   * everything that fits is taken, it waits for a turn when capacity frees up.
   */
  readonly place: (run: Run, job: Job, submissionId: string, onPending?: (message: string) => Effect.Effect<void>) => Effect.Effect<JobEvent>
  /** Capacity freed up (an instance was released or terminated): the waiting jobs get a turn. */
  readonly signalCapacity: Effect.Effect<void>
}

export interface ProvisionerOptions {
  readonly store: StateStoreService
  readonly compute: ComputeService
  readonly pool: InstancePool
  /** How long a job may wait for an instance. */
  readonly provisioningTimeoutMs: number
  /** How many jobs may plan and provision at the same time. */
  readonly concurrency: number
}

/** How soon a placement that the server's own store failed is tried again. */
const STORE_RETRY_MS = 2_000

/** A provisioning attempt found everything that fits taken: try again when capacity frees up. */
interface WaitForCapacity {
  readonly _tag: "WaitForCapacity"
  readonly reason: string
  /** Try again after this long even if no capacity is freed (a failure of the server's own, not of the offers). */
  readonly retryInMs?: number
}

/** A job waiting for capacity: `turn` is completed with where to report whether it got an instance. */
interface Waiter {
  readonly seq: number
  readonly key: string
  readonly turn: Deferred.Deferred<Deferred.Deferred<boolean>>
}

/** What a job's plan considers: the configuration's lists; a multi-node job only cluster fleets. */
export const planFilter = (run: Run, job: Job): PlanFilter => {
  const config = run.runSpec.configuration
  return {
    fleets: config.fleets,
    clusterOnly: job.jobSpec.jobsPerReplica > 1,
    backends: config.backends,
    regions: config.regions,
    instanceTypes: config.instanceTypes
  }
}

/** What a backend learns of the job it makes an instance (or a multi-node job's instances) for. */
const instanceJob = (job: Job): InstanceJob => ({
  jobName: job.jobSpec.jobName,
  ...(job.jobSpec.imageName ? { image: job.jobSpec.imageName } : {}),
  requirements: job.jobSpec.requirements,
  ...(job.jobSpec.maxDuration === null ? {} : { maxDuration: job.jobSpec.maxDuration }),
  nodes: job.jobSpec.jobsPerReplica,
  ports: [...job.jobSpec.appSpecs.map((a) => a.port), ...(job.jobSpec.servicePort ? [job.jobSpec.servicePort] : [])],
  instanceMounts: job.jobSpec.volumes.flatMap((v) => ("instancePath" in v ? [v.instancePath] : [])),
  volumes: job.jobSpec.volumes
})

/** Offers tried per placement, cheapest first. */
const OFFERS_TRIED = 10

/** Jobs with the same key find the same capacity: one that finds none speaks for the others. */
const capacityKey = (run: Run, job: Job): string => {
  const config = run.runSpec.configuration
  try {
    return JSON.stringify([run.projectName, job.jobSpec.requirements, config.backends, config.regions, config.instanceTypes])
  } catch {
    return `${run.id}/${job.jobSpec.jobName}`
  }
}

/** What went wrong in a cause, in a line: an error's message, a defect's name and message, or an interruption. */
const describeCause = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) return errorMessage(failure.value)
  const defect = Cause.dieOption(cause)
  if (Option.isSome(defect)) {
    const d = defect.value
    return d instanceof Error ? `${d.name}: ${d.message}` : `defect: ${errorMessage(d)}`
  }
  if (Cause.isInterruptedOnly(cause)) {
    const by = [...Cause.interruptors(cause)].map(FiberId.threadName).join(", ")
    return by === "" ? "interrupted" : `interrupted (by fiber ${by})`
  }
  return Cause.pretty(cause).split("\n")[0]
}

export const make = (options: ProvisionerOptions): Effect.Effect<Provisioner, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { store, compute, pool, provisioningTimeoutMs } = options
    const scope = yield* Effect.scope
    // At most this many jobs plan and provision at once: thousands of queued runs taken at
    // once (after a restart, a burst of submissions) would otherwise all wait on the same
    // database queue together, each getting slower, until their leases ran out unrenewed.
    // (Our FIFO semaphore, not Effect's: that one wakes every waiter on each release, which with
    // thousands of waiting workers stalled the event loop for seconds — 1,000 waiters through
    // one permit take ~8 s there, ~0.1 s here.)
    const permits = yield* FifoSemaphore.make(options.concurrency)
    const gangs = Placement.makeRegistry()

    // Jobs waiting for capacity, oldest first. When capacity frees up (an instance of this
    // replica is released or terminated, or every couple of seconds for capacity freed
    // elsewhere) a pass gives the waiters a turn one at a time: each plans again and says
    // whether it got an instance. A waiter that finds nothing makes the pass skip the others
    // with the same requirements (they would find nothing either), so a pass costs one plan per
    // placed job plus one per distinct kind of job still waiting — not one per waiter.
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
        Effect.forkIn(scope),
        Effect.asVoid
      )
    })
    // Capacity freed on another replica or by a backend on its own is found by a pass every
    // couple of seconds while jobs wait.
    yield* signalCapacity.pipe(
      Effect.delay(Duration.seconds(2)),
      Effect.forever,
      Effect.forkIn(scope)
    )

    /** Finds an instance for a submission: an idle one, else a new one from the cheapest offer that works. */
    const provision = (run: Run, job: Job, submissionId: string, onTaken: (instanceId: string) => void, onPending?: (message: string) => Effect.Effect<void>): Effect.Effect<JobEvent | WaitForCapacity> => {
      // Taking an idle instance marks it busy and creating one makes it: neither is cut short,
      // and what was taken is noted before the placement can be interrupted again, so that an
      // interrupted placement gives it back instead of leaving it busy with no job on it.
      const noteTaken = <E, R>(take: Effect.Effect<Option.Option<{ readonly pd: JobProvisioningData; readonly instanceId: string }>, E, R>) =>
        Effect.tap(take, (got) => Effect.sync(() => Option.isSome(got) && onTaken(got.value.instanceId)))
      return Effect.gen(function* () {
        const config = run.runSpec.configuration
        const hint = pool.idleHint(run.projectName)
        const offers = yield* offersForJob(run.projectName, job.jobSpec.requirements, planFilter(run, job), { skipIdle: hint.skipIdle }).pipe(
          Effect.provideService(StateStore, store),
          Effect.provideService(Compute, compute)
        )
        hint.found(offers.idleInstances)
        if (job.jobSpec.jobsPerReplica > 1) {
          // A multi-node replica is placed whole by its master (rank 0), or not at all: on
          // idle instances of a cluster fleet, else on new ones a backend creates together.
          const gang = yield* Placement.placeGang(pool, run, job, offers.offers)
          const key = Placement.gangKey(run, job)
          const publishPlaced = (placements: ReadonlyMap<number, { readonly pd: JobProvisioningData; readonly instanceId: string }>) =>
            Effect.gen(function* () {
              const events = new Map([...placements].map(([rank, p]) => [rank, JobEvent.Provisioned({ provisioningData: p.pd, instanceId: p.instanceId })]))
              yield* gangs.publish(key, events)
              return events.get(job.jobSpec.jobNum)!
            })
          switch (gang._tag) {
            case "Placed":
              return yield* publishPlaced(gang.placements)
            case "Taken":
              return { _tag: "WaitForCapacity" as const, reason: gang.message }
            case "NoFleet": {
              const fresh = offers.offers.filter((o) => o.instanceId === undefined).slice(0, OFFERS_TRIED)
              const ranks = run.jobs
                .filter((j) => j.jobSpec.replicaNum === job.jobSpec.replicaNum)
                .sort((a, b) => a.jobSpec.jobNum - b.jobSpec.jobNum)
              const errors: Array<string> = []
              let busy = 0
              for (const candidate of fresh) {
                const made = yield* Effect.uninterruptible(pool.createGroup(run.projectName, candidate, run, ranks.map((r) => r.jobSpec.jobName), instanceJob(job), onPending)).pipe(
                  Effect.map(Option.some),
                  Effect.catchAll((e) =>
                    Effect.as(Effect.sync(() => {
                      if (e._tag === "BackendError" && e.reason === "NoCapacity") busy++
                      errors.push(`${candidate.backend}: ${errorMessage(e)}`)
                    }), Option.none())
                  )
                )
                if (Option.isSome(made)) return yield* publishPlaced(new Map(made.value.map((p, i) => [ranks[i].jobSpec.jobNum, p])))
              }
              if (fresh.length > 0 && busy === fresh.length) {
                const waited = Date.now() - (latestSubmission(job)?.submittedAt.getTime() ?? Date.now())
                if (waited < provisioningTimeoutMs) return { _tag: "WaitForCapacity" as const, reason: errors.join("; ") }
              }
              const message = offers.offers.length === 0
                ? explainNoOffers(offers)
                : fresh.length > 0 ? `every offer failed: ${errors.join("; ")}` : gang.message
              const event = JobEvent.NoCapacity({ message })
              yield* gangs.publish(key, new Map(Array.from({ length: job.jobSpec.jobsPerReplica }, (_, rank) => [rank, event])))
              return event
            }
          }
        }
        const errors: Array<string> = []
        let busy = 0
        // The server's own store failing (a full disk, the database away) says nothing of the
        // offers: the job waits and is placed again, instead of failing for want of capacity.
        let storeFailed: string | undefined
        const tried = offers.offers.slice(0, OFFERS_TRIED)
        for (const candidate of tried) {
          const got = candidate.instanceId !== undefined
            ? yield* Effect.uninterruptible(noteTaken(pool.takeIdle(candidate, job.jobSpec.jobName, offers.idleRows?.get(candidate.instanceId!)))).pipe(
              // Taken by another job since the plan (or found dead and terminated): capacity
              // that is busy right now, not a failure — the job waits for its turn.
              Effect.tap((taken) => Effect.sync(() => Option.isNone(taken) && busy++)),
              Effect.catchAll((e) => Effect.as(Effect.sync(() => {
                if (e._tag === "StateStoreError") storeFailed = errorMessage(e)
                errors.push(errorMessage(e))
              }), Option.none()))
            )
            : yield* Effect.uninterruptible(noteTaken(Effect.map(pool.create(run.projectName, candidate, run, job.jobSpec.jobName, instanceJob(job), onPending), Option.some))).pipe(
              Effect.catchAll((e) =>
                Effect.as(
                  Effect.sync(() => {
                    if (e._tag === "BackendError" && e.reason === "NoCapacity") busy++
                    if (e._tag === "StateStoreError") storeFailed = errorMessage(e)
                    errors.push(`${candidate.backend}: ${errorMessage(e)}`)
                  }),
                  Option.none()
                )
              )
            )
          if (Option.isSome(got)) return JobEvent.Provisioned({ provisioningData: got.value.pd, instanceId: got.value.instanceId })
        }
        const why = offers.offers.length === 0 ? explainNoOffers(offers) : `every offer failed: ${errors.join("; ")}`
        if (storeFailed !== undefined) {
          const sub = latestSubmission(job)
          const waited = Date.now() - (sub?.submittedAt.getTime() ?? Date.now())
          if (waited >= provisioningTimeoutMs) return JobEvent.ProvisioningFailed({ message: `provisioning failed: the server's state store failed: ${storeFailed}` })
          yield* Effect.logWarning(`job ${submissionId}: the state store failed while placing it (${storeFailed}); trying again`)
          return { _tag: "WaitForCapacity" as const, reason: `the server's state store failed: ${storeFailed}`, retryInMs: STORE_RETRY_MS }
        }
        // Something fits but is taken right now (a backend at its instance limit, an offer
        // only unavailable): the job waits for capacity, as upstream's jobs wait for a fleet
        // instance, until the provisioning timeout (waiting_instance_limit_exceeded).
        const onlyTaken =
          (offers.offers.length > 0 && busy === tried.length) ||
          (offers.offers.length === 0 && offers.excluded.some((ex) => ex.reasons.length > 0 && ex.reasons.every((r) => r.startsWith("availability:"))))
        if (onlyTaken) {
          const sub = latestSubmission(job)
          const waited = Date.now() - (sub?.submittedAt.getTime() ?? Date.now())
          if (waited >= provisioningTimeoutMs) return JobEvent.ProvisioningTimeout()
          return { _tag: "WaitForCapacity" as const, reason: why }
        }
        return JobEvent.NoCapacity({ message: why })
      }).pipe(
        // Provisioning that broke (the store failed, a plugin or the engine has a bug, a fiber
        // it waited on was interrupted) says so, in the job's reason and in the log with the
        // whole cause. (This fiber's own interruption ends it without coming here.)
        Effect.catchAllCause((cause) => {
          const message = `provisioning failed: ${describeCause(cause)}`
          const log = Cause.isFailType(cause) ? Effect.logWarning(`job ${submissionId}: ${message}`) : Effect.logError(`job ${submissionId}: ${message}`, cause)
          return Effect.as(log, JobEvent.ProvisioningFailed({ message }))
        })
      )
    }

    const place = (run: Run, job: Job, submissionId: string, onPending?: (message: string) => Effect.Effect<void>): Effect.Effect<JobEvent> => {
      // The other nodes of a multi-node replica wait for their master's placement.
      if (job.jobSpec.jobsPerReplica > 1 && job.jobSpec.jobNum > 0) {
        return gangs.await(Placement.gangKey(run, job), job.jobSpec.jobNum, provisioningTimeoutMs)
      }
      const submittedAt = latestSubmission(job)?.submittedAt.getTime() ?? Date.now()
      let report: Deferred.Deferred<boolean> | undefined
      // The instance this placement took, given back if the placement is interrupted before
      // its driver has the event (the run ended or another replica took it over meanwhile).
      let taken: string | undefined
      const answer = (placed: boolean) => Effect.suspend(() => (report === undefined ? Effect.void : Deferred.succeed(report, placed)))
      return Effect.gen(function* () {
        const seq = waiterSeq++
        const key = capacityKey(run, job)
        while (true) {
          const event = yield* permits.withPermit(provision(run, job, submissionId, (id) => (taken = id), onPending))
          if (event._tag !== "WaitForCapacity") {
            if (event._tag === "Provisioned") faultPoint("job.placed")
            yield* answer(true)
            return event
          }
          // Wait for a turn when capacity frees up, or until the provisioning timeout
          // (then `provision` answers ProvisioningTimeout).
          yield* answer(false)
          const waiter: Waiter = { seq, key, turn: yield* Deferred.make<Deferred.Deferred<boolean>>() }
          addWaiter(waiter)
          const turn = yield* Deferred.await(waiter.turn).pipe(
            Effect.timeout(Duration.millis(Math.min(event.retryInMs ?? Infinity, Math.max(0, submittedAt + provisioningTimeoutMs - Date.now()) + 5))),
            Effect.option,
            Effect.ensuring(Effect.sync(() => removeWaiter(waiter)))
          )
          report = Option.getOrUndefined(turn)
        }
      }).pipe(
        Effect.ensuring(answer(false)),
        Effect.onInterrupt(() => (taken === undefined ? Effect.void : pool.release(taken)))
      )
    }

    return { place, signalCapacity }
  })
