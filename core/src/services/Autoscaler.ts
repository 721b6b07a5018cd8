/**
 * The autoscaler: follows each service with a `replicas` range and `scaling` rules by the
 * requests per second the proxy counts, every second and at once when a request waits with no
 * replica (scale from zero). A scale-up adds replica jobs to the run (the engine provisions them
 * as any new submission); a scale-down first drains the replicas it removes — they take no new
 * request — and asks the engine to stop each (`scaled_down`) only once its last request in flight
 * has ended. Replicas not serving yet (still starting) are stopped first. Services with a fixed
 * `replicas` count are followed too: a re-applied count is applied in place, and a re-applied
 * spec is rolled out one replica at a time (Rollout.ts).
 *
 * Server replicas sharing a store with peer messages (PostgreSQL) autoscale as one
 * (ServicePeers.ts): one of them decides, on everyone's counts, and a replica it drains is
 * stopped only once no server has a request in flight there.
 */
import { Context, Effect, Layer, Runtime, Schedule } from "effect"
import type { ServiceReport } from "./ServicePeers.ts"
import { encodeAdmitted, encodeBye, encodeReports, ServicePeers } from "./ServicePeers.ts"
import { type Admitted, RateLimiter } from "./RateLimiter.ts"
import { Job, JobSubmission, latestSubmission } from "../domain/Job.ts"
import { Run } from "../domain/Run.ts"
import { jobSpecsFromRunSpec } from "../domain/RunJobSpecs.ts"
import { isJobStatusFinished, isRunStatusFinished } from "../domain/Status.ts"
import { Engine } from "../engine/Engine.ts"
import { type LoadedRun, loadRun, modifyRunKnown, type RunRecord } from "../engine/RunRecord.ts"
import { StateStore } from "../ports/StateStore.ts"
import { desiredReplicas } from "./Autoscaling.ts"
import { isUpToDate } from "./Deployment.ts"
import { type RolloutReplica, rolloutStep } from "./Rollout.ts"
import type { ProxyHooks } from "./ServiceProxy.ts"
import { type Replica, type ServiceEntry, ServiceRegistry } from "./ServiceRegistry.ts"

/** How often every followed service is looked at. */
const TICK_MS = 1_000
/** The most rate-limit buckets one report tells the others of (the busiest first). */
const MAX_ADMITTED_SHARED = 2_000
/** Latencies unchanged since they were told are told again this often (for a server that just started). */
const LATENCIES_RETOLD_MS = 10_000
/** A waiting request counts as demand this long after it last asked. */
const DEMAND_MS = 5_000

interface Followed {
  lastScaledAt: number | undefined
  demandAt: number
  /** Submission ids being drained: stopped once their requests in flight have ended. */
  readonly draining: Set<string>
  /** Drained submission ids asked to stop: out of rotation until their replicas are gone. */
  readonly stopping: Set<string>
  /** When each drain began (epoch ms): other server replicas answer for that drain. */
  readonly drainStarted: Map<string, number>
  /** The last whole second of requests told to the other server replicas. */
  reportedUpTo: number
  /** How many latencies had been measured when they were last told, and when. */
  latenciesTold: number
  latenciesToldAt: number
}

export interface AutoscalerService {
  readonly hooks: ProxyHooks
  /** The services' rate limits, shared with the other server replicas when the store carries messages. */
  readonly limiter: RateLimiter
  /** Looks at every followed service now (tests, and the proxy's demand). */
  readonly tick: Effect.Effect<void>
}

export class Autoscaler extends Context.Tag("@dstack-ts/core/services/Autoscaler")<Autoscaler, AutoscalerService>() {}

/** Whether a service follows its load (a range and rules). */
export const isAutoscaled = (entry: ServiceEntry): boolean => {
  const c = entry.configuration
  return c.scaling !== undefined && c.replicas.min !== c.replicas.max
}

const activeJobs = (record: RunRecord): ReadonlyArray<Job> => {
  const stopping = new Set(record.scaleDown ?? [])
  return record.run.jobs.filter((job) => {
    const sub = latestSubmission(job)
    return sub !== undefined && !isJobStatusFinished(sub.status) && sub.status !== "terminating" && !stopping.has(sub.id)
  })
}

/** A new replica job of the run, numbered after every replica it had. */
const newReplicaJob = (record: RunRecord, now: Date): Job => {
  const replicaNum = record.run.jobs.reduce((n, job) => Math.max(n, job.jobSpec.replicaNum + 1), 0)
  const jobSpec = jobSpecsFromRunSpec(record.run.runSpec, { replicas: replicaNum + 1 }).at(-1)!
  return new Job({
    jobSpec,
    jobSubmissions: [new JobSubmission({ id: crypto.randomUUID(), submissionNum: 0, deploymentNum: record.run.deploymentNum, submittedAt: now, lastProcessedAt: now, status: "submitted" })]
  })
}

/** What the roll waits for, in words (the API's `deployment.message`). */
const rolloutMessage = (
  view: ReadonlyArray<RolloutReplica>,
  active: ReadonlyArray<Job>,
  replicas: ReadonlyMap<string, Replica>,
  desired: number,
  now: number
): string => {
  const old = view.filter((r) => !r.upToDate).length
  const waiting = view.find((r) => r.upToDate && !r.ready)
  if (waiting === undefined) return `rolling: ${old} replica(s) of ${desired} still on the previous spec`
  const job = active.find((j) => latestSubmission(j)!.id === waiting.id)
  const replica = replicas.get(waiting.id)
  const status = job === undefined ? "starting" : latestSubmission(job)!.status
  const why = replica === undefined
    ? `is ${status}`
    : !replica.ready
    ? `has not passed its probes for ${Math.round((now - replica.runningSince) / 1000)} s${replica.probeError !== undefined ? ` (${replica.probeError})` : ""}`
    : "does not accept connections yet"
  return `rolling: new replica ${waiting.replicaNum} ${why}; the ${old} replica(s) on the previous spec keep serving`
}

export const make = Effect.gen(function* () {
  const registry = yield* ServiceRegistry
  const store = yield* StateStore
  const engine = yield* Engine
  const followed = new WeakMap<ServiceEntry, Followed>()
  const stateOf = (entry: ServiceEntry): Followed => {
    let state = followed.get(entry)
    if (state === undefined) {
      followed.set(entry, (state = { lastScaledAt: undefined, demandAt: 0, draining: new Set(), stopping: new Set(), drainStarted: new Map(), reportedUpTo: Math.floor(Date.now() / 1000) - 60, latenciesTold: 0, latenciesToldAt: 0 }))
    }
    return state
  }
  const withStore = <A, E>(effect: Effect.Effect<A, E, StateStore>) => Effect.provideService(effect, StateStore, store)
  // The other server replicas on this store, when it carries messages between them.
  const peerMessages = store.peers
  const peers = peerMessages === undefined ? undefined : new ServicePeers(engine.owner)
  const limiter = new RateLimiter(peers !== undefined)

  /**
   * Marks the replicas drained: those the deciding server replica drains (this one's own drains
   * when it decides). Done each tick and whenever the registry's replicas change, so that a
   * replica object made afresh for a drained job takes no request meanwhile.
   */
  const markDrains = (entry: ServiceEntry, now: number): void => {
    if (peers !== undefined && !peers.decides(now)) {
      const drains = peers.decidersDrains(entry.runId, now)
      for (const replica of entry.replicas) replica.draining = drains[replica.submissionId] !== undefined
    } else {
      const { draining, stopping, drainStarted } = stateOf(entry)
      for (const id of stopping) {
        if (entry.replicas.some((r) => r.submissionId === id)) continue
        stopping.delete(id)
        drainStarted.delete(id)
      }
      for (const replica of entry.replicas) replica.draining = draining.has(replica.submissionId) || stopping.has(replica.submissionId)
    }
  }
  registry.onReplicasChanged((entry) => markDrains(entry, Date.now()))

  /**
   * Adds replicas until `serving` of them serve (not draining here). Counted on the run as it is
   * written: a write over a newer run than `read` (it conflicts and is made again) adds only
   * what that run lacks.
   */
  const addReplicas = (entry: ServiceEntry, serving: number, now: number, read: LoadedRun) =>
    Effect.gen(function* () {
      const draining = stateOf(entry).draining
      const stored = yield* withStore(modifyRunKnown(entry.runId, (r) => {
        const has = activeJobs(r).filter((job) => !draining.has(latestSubmission(job)!.id)).length
        let next = r
        for (let i = has; i < serving; i++) {
          next = { ...next, run: new Run({ ...next.run, jobs: [...next.run.jobs, newReplicaJob(next, new Date(now))] }, { disableValidation: true }) }
        }
        return next
      }, read))
      // With the version written, the change feed's notice of this write does not wake the run's worker again.
      yield* engine.wake(entry.runId, stored)
    })

  const scale = (entry: ServiceEntry): Effect.Effect<void, unknown> =>
    Effect.gen(function* () {
      const state = stateOf(entry)
      const now = Date.now()
      markDrains(entry, now)
      // The API's counts are every server replica's.
      if (peers !== undefined) {
        const [requests, errors] = peers.totals(entry.runId, now)
        entry.others = { rps: peers.rps(entry.runId, now, 60), requests, errors, latencies: peers.latencies(entry.runId, now) }
      }
      if (peers !== undefined && !peers.decides(now)) {
        // Another server replica decides: drains this one began while it decided are its no more.
        state.draining.clear()
        state.stopping.clear()
        state.drainStarted.clear()
        // What the API shows here is the decider's.
        const view = peers.decidersView(entry.runId, now)
        entry.desired = view?.want
        entry.deployment = view?.deployment
        return
      }
      // The registry's copy is the run as stored while it is not stale: every write of this
      // process reaches it with its row (and marks it stale until then), others' notices mark it
      // stale. A newer run written meanwhile elsewhere makes the write below conflict and retry.
      // A copy being brought up to date (a write's row decoded a moment after the write, or a
      // read in flight) is waited for, as the proxy does, rather than read again.
      if (entry.stale && entry.following !== undefined) yield* Effect.promise(() => entry.following!)
      const read = !entry.stale && entry.loaded !== undefined && entry.loaded.row.id === entry.runId ? entry.loaded : yield* withStore(loadRun(entry.runId))
      const { record } = read
      if (record.run.status === "terminating" || isRunStatusFinished(record.run.status)) return
      const replicas = new Map<string, Replica>(entry.replicas.map((r) => [r.submissionId, r]))
      const active = activeJobs(record)
      const serving = active.filter((job) => !state.draining.has(latestSubmission(job)!.id))
      const autoscaled = isAutoscaled(entry)
      // A run waiting to be resubmitted (its failed replicas retried after upstream's backoff) is
      // the engine's: as upstream, a pending service is not scaled, else a replica added now would
      // run beside the one the engine resubmits.
      if (record.run.status === "pending") return
      const scaling = entry.configuration.scaling
      const desired = autoscaled
        ? desiredReplicas({
          replicas: entry.configuration.replicas,
          scaling,
          current: serving.length,
          rps: scaling === undefined ? 0 : entry.metrics.rps(now, scaling.window) + (peers?.rps(entry.runId, now, scaling.window) ?? 0),
          demand: now - Math.max(state.demandAt, peers?.demandAt(entry.runId, now) ?? 0) < DEMAND_MS,
          lastScaledAt: state.lastScaledAt,
          now
        })
        : entry.configuration.replicas.min ?? 1
      entry.desired = desired
      let drained = false
      const drain = (id: string) => {
        if (!state.draining.has(id)) state.drainStarted.set(id, now)
        drained = true
        state.draining.add(id)
        const replica = replicas.get(id)
        if (replica !== undefined) replica.draining = true
      }
      const outdated = serving.filter((job) => !isUpToDate(record.run.runSpec, job))
      if (outdated.length > 0) {
        // A rolling deployment: one new replica at a time, an old one drained once it is ready.
        const view = yield* Effect.forEach(serving, (job) => {
          const id = latestSubmission(job)!.id
          const upToDate = !outdated.includes(job)
          const replica = replicas.get(id)
          // An old replica serving already counts as ready; a new one once it accepts connections.
          const ready = replica === undefined || !replica.ready
            ? Effect.succeed(false)
            : upToDate ? Effect.promise(() => registry.address(replica).then((address) => replica.listeningNow(address), () => false)) : Effect.succeed(true)
          return Effect.map(ready, (ready): RolloutReplica => ({ id, replicaNum: job.jobSpec.replicaNum, upToDate, ready }))
        })
        const step = rolloutStep(view, desired)
        if (step.start) yield* addReplicas(entry, serving.length + 1, now, read)
        if (step.drain !== undefined) drain(step.drain)
        entry.deployment = { outdated: outdated.length - (step.drain === undefined ? 0 : 1), message: rolloutMessage(view, active, replicas, desired, now) }
      } else if (desired > serving.length) {
        entry.deployment = undefined
        // Replicas being drained come back first; then new ones (only of the current spec).
        let missing = desired - serving.length
        for (const id of [...state.draining]) {
          if (missing === 0) break
          const job = active.find((j) => latestSubmission(j)!.id === id)
          if (job === undefined || !isUpToDate(record.run.runSpec, job)) continue
          state.draining.delete(id)
          state.drainStarted.delete(id)
          const replica = replicas.get(id)
          if (replica !== undefined) replica.draining = false
          missing--
        }
        if (missing > 0) yield* addReplicas(entry, desired, now, read)
        state.lastScaledAt = now
      } else if (desired < serving.length) {
        entry.deployment = undefined
        // Replicas not serving yet go first, then the newest.
        const order = [...serving].sort((a, b) => {
          const ra = replicas.has(latestSubmission(a)!.id) ? 1 : 0
          const rb = replicas.has(latestSubmission(b)!.id) ? 1 : 0
          return ra - rb || b.jobSpec.replicaNum - a.jobSpec.replicaNum
        })
        for (const job of order.slice(0, serving.length - desired)) drain(latestSubmission(job)!.id)
        state.lastScaledAt = now
      } else entry.deployment = undefined
      // The other server replicas hear of a new drain at once: they stop sending it requests.
      if (drained) publishSoon()
      // Drained replicas (nothing in flight here, nor on any other server replica) stop.
      const done = [...state.draining].filter((id) =>
        (replicas.get(id)?.outstanding ?? 0) === 0 &&
        (peers === undefined || peers.drainedEverywhere(entry.runId, id, state.drainStarted.get(id) ?? 0, now)))
      if (done.length > 0) {
        const stored = yield* withStore(modifyRunKnown(entry.runId, (r) => ({ ...r, scaleDown: [...new Set([...(r.scaleDown ?? []), ...done])] })))
        for (const id of done) {
          state.draining.delete(id)
          state.stopping.add(id)
        }
        yield* engine.wake(entry.runId, stored)
      }
    })

  /** The deciding replica follows the services the others report (it may not have seen them). */
  const followHeard: Effect.Effect<void> = Effect.suspend(() => {
    if (peers === undefined) return Effect.void
    const now = Date.now()
    if (!peers.decides(now)) return Effect.void
    const known = new Set(registry.entries().map((e) => e.runId))
    const unknown = [...peers.services(now)].filter(([runId]) => !known.has(runId))
    return Effect.forEach(unknown, ([, s]) => Effect.ignore(registry.lookup(s.project, s.runName)), { discard: true })
  })

  /** Spends what another server replica let through from this one's buckets for those clients. */
  const spendAdmitted = (admitted: ReadonlyArray<unknown>, now: number): void => {
    const entries = new Map(registry.entries().map((e) => [e.runId, e]))
    for (const a of admitted) {
      if (!Array.isArray(a) || a.length !== 4 || typeof a[0] !== "string" || typeof a[1] !== "string" || typeof a[2] !== "string" || typeof a[3] !== "number") continue
      // A service not followed here has no bucket here: its first request makes a full one.
      const limit = entries.get(a[0])?.configuration.rateLimits?.find((l) => l.prefix === a[1])
      if (limit !== undefined) limiter.spend(a as unknown as Admitted, limit, now)
    }
  }

  /** Tells the other server replicas this one's counts, waiting requests, part in drains and rate-limited requests. */
  const publish: Effect.Effect<void> = Effect.suspend(() => {
    if (peerMessages === undefined || peers === undefined) return Effect.void
    const now = Date.now()
    const deciding = peers.decides(now)
    const services: Array<[string, ServiceReport]> = []
    const told = new Set<string>()
    // For each replica the decider drains: when that drain began, and this replica's requests in flight there.
    const acknowledged = (drains: Readonly<Record<string, number>>, entry?: ServiceEntry) =>
      Object.fromEntries(Object.entries(drains).map(([id, at]) => [id, [at, entry?.replicas.find((r) => r.submissionId === id)?.outstanding ?? 0] as const]))
    for (const entry of registry.entries()) {
      const state = stateOf(entry)
      const { counts, upTo } = entry.metrics.countsSince(state.reportedUpTo, now)
      state.reportedUpTo = upTo
      // The latencies kept, when they changed since they were last told, and every 10 s.
      const measured = entry.metrics.latenciesMeasured
      const latencies = measured > 0 && (measured !== state.latenciesTold || now - state.latenciesToldAt >= LATENCIES_RETOLD_MS)
        ? entry.metrics.latencyHistogram()
        : undefined
      if (latencies !== undefined) {
        state.latenciesTold = measured
        state.latenciesToldAt = now
      }
      const drains = deciding ? undefined : peers.decidersDrains(entry.runId, now)
      services.push([entry.runId, {
        p: entry.project,
        n: entry.runName,
        ...(counts.length > 0 ? { c: counts } : {}),
        t: [entry.metrics.requests, entry.metrics.errors] as const,
        ...(latencies !== undefined ? { l: latencies } : {}),
        ...(now - state.demandAt < DEMAND_MS ? { d: 1 as const } : {}),
        ...(deciding && state.draining.size + state.stopping.size > 0
          ? { dr: Object.fromEntries([...state.draining, ...state.stopping].map((id) => [id, state.drainStarted.get(id) ?? 0])) }
          : {}),
        ...(deciding && entry.desired !== undefined ? { w: entry.desired } : {}),
        ...(deciding && entry.deployment !== undefined ? { dep: entry.deployment } : {}),
        ...(drains !== undefined && Object.keys(drains).length > 0 ? { ack: acknowledged(drains, entry) } : {})
      }])
      told.add(entry.runId)
    }
    // A drain of a service this replica does not follow: nothing of it is in flight here.
    if (!deciding) {
      for (const [runId, s] of peers.services(now)) {
        const drains = peers.decidersDrains(runId, now)
        if (told.has(runId) || Object.keys(drains).length === 0) continue
        services.push([runId, { p: s.project, n: s.runName, ack: acknowledged(drains) }])
      }
    }
    const payloads = [
      ...encodeReports(engine.owner, services, peerMessages.maxBytes),
      ...encodeAdmitted(engine.owner, limiter.takeAdmitted(MAX_ADMITTED_SHARED), peerMessages.maxBytes)
    ]
    return Effect.forEach(payloads, (payload) => peerMessages.publish(payload), { discard: true }).pipe(
      Effect.catchAllCause((cause) => Effect.logDebug("services: cannot tell the other server replicas", cause))
    )
  })

  let ticking = false
  let again = false
  const tick: Effect.Effect<void> = Effect.suspend(() => {
    if (ticking) {
      again = true
      return Effect.void
    }
    ticking = true
    return followHeard.pipe(Effect.zipRight(Effect.suspend(() => Effect.forEach(registry.entries(), (entry) =>
      scale(entry).pipe(Effect.catchAllCause((cause) => Effect.logWarning(`autoscaling service ${entry.project}/${entry.runName}`, cause))), { discard: true }))),
      Effect.zipRight(publish),
      Effect.ensuring(Effect.sync(() => {
        ticking = false
      })),
      Effect.zipRight(Effect.suspend(() => {
        if (!again) return Effect.void
        again = false
        return tick
      }))
    )
  })

  const runtime = yield* Effect.runtime<never>()
  const kick = () => void Runtime.runFork(runtime)(tick)
  function publishSoon() {
    Runtime.runFork(runtime)(publish)
  }
  if (peerMessages !== undefined && peers !== undefined) {
    yield* peerMessages.listen((payload) => {
      const now = Date.now()
      const report = peers.hear(payload, now)
      if (report?.rl !== undefined) spendAdmitted(report.rl, now)
      // A request waiting elsewhere, a server's answer about a drain, or the decider leaving
      // (this one may decide now) is acted on at once.
      if (report !== undefined && peers.decides(now) && (report.bye === 1 || Object.values(report.s ?? {}).some((s) => s.d === 1 || s.ack !== undefined))) kick()
    }).pipe(Effect.catchAllCause((cause) => Effect.logWarning("services: cannot listen to the other server replicas; autoscaling on this one's counts", cause)))
    // Stopping, this replica tells the others, so that the next one decides at once (not waiting
    // long on a store that is gone: the others then notice the silence).
    yield* Effect.addFinalizer(() => Effect.ignore(Effect.timeout(peerMessages.publish(encodeBye(engine.owner)), "2 seconds")))
  }
  yield* Effect.forkScoped(Effect.repeat(tick, Schedule.spaced(TICK_MS)))

  const hooks: ProxyHooks = {
    demand: (entry) => {
      if (!isAutoscaled(entry)) return
      const state = stateOf(entry)
      const first = Date.now() - state.demandAt >= DEMAND_MS
      state.demandAt = Date.now()
      if (!first) return
      // Where another server replica decides, it hears of the waiting request now.
      if (peers !== undefined && !peers.decides(Date.now())) publishSoon()
      else kick()
    },
    released: (entry, replica) => {
      if (replica.draining && replica.outstanding === 0) kick()
    }
  }
  return { hooks, tick, limiter } satisfies AutoscalerService
})

export const layer: Layer.Layer<Autoscaler, never, ServiceRegistry | StateStore | Engine> = Layer.scoped(Autoscaler, make)
