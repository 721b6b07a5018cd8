/**
 * Placing a multi-node task (`nodes: N`) all or nothing: the master job (node rank 0) takes N
 * idle instances of one `placement: cluster` fleet at once, or none; the other jobs of its
 * replica wait for the master's placement (upstream: waiting for the master job) and get the
 * instance the master took for their rank, or the master's failure.
 */
import { Deferred, Duration, Effect, Option } from "effect"
import type { Job } from "../domain/Job.ts"
import { latestSubmission } from "../domain/Job.ts"
import type { InstanceOffer } from "../domain/Offer.ts"
import type { Run } from "../domain/Run.ts"
import type { StateStoreError } from "../ports/StateStore.ts"
import type { InstancePool, Placement } from "./InstancePool.ts"
import { JobEvent } from "./JobLifecycle.ts"

/** The jobs of one replica's submission round place together. */
export const gangKey = (run: Run, job: Job): string =>
  `${run.id}/${job.jobSpec.replicaNum}/${latestSubmission(job)?.submissionNum ?? 0}`

/** What the master's placement gives each rank of the replica. */
export type GangOutcome = ReadonlyMap<number, JobEvent>

/** Where masters publish their replica's placement and the other ranks wait for it. */
export interface GangRegistry {
  readonly publish: (key: string, outcome: GangOutcome) => Effect.Effect<void>
  /** The event for rank `jobNum` once its master placed the replica; ProvisioningTimeout after `timeoutMs`. */
  readonly await: (key: string, jobNum: number, timeoutMs: number) => Effect.Effect<JobEvent>
}

export const makeRegistry = (): GangRegistry => {
  const gangs = new Map<string, { readonly deferred: Deferred.Deferred<GangOutcome>; readonly at: number }>()
  const entry = (key: string) =>
    Effect.gen(function* () {
      const known = gangs.get(key)
      if (known !== undefined) return known.deferred
      // Entries whose ranks never came for them (the run ended first) do not pile up.
      const now = Date.now()
      for (const [k, v] of gangs) if (now - v.at > 3_600_000) gangs.delete(k)
      const deferred = yield* Deferred.make<GangOutcome>()
      gangs.set(key, { deferred, at: now })
      return deferred
    })
  return {
    publish: (key, outcome) => Effect.flatMap(entry(key), (d) => Deferred.succeed(d, outcome)).pipe(Effect.asVoid),
    await: (key, jobNum, timeoutMs) =>
      Effect.flatMap(entry(key), (d) => Deferred.await(d)).pipe(
        Effect.timeout(Duration.millis(timeoutMs)),
        Effect.option,
        Effect.map((outcome) =>
          Option.match(outcome, {
            onNone: () => JobEvent.ProvisioningTimeout(),
            onSome: (o) => o.get(jobNum) ?? JobEvent.ProvisioningFailed({ message: `the master job placed no instance for node rank ${jobNum}` })
          })
        )
      )
  }
}

/** The outcome of placing a replica: every rank placed, or why not (and whether to wait for capacity). */
export type GangPlacement =
  | { readonly _tag: "Placed"; readonly placements: ReadonlyMap<number, Placement> }
  | { readonly _tag: "NoFleet"; readonly message: string }
  | { readonly _tag: "Taken"; readonly message: string }

/**
 * Takes one idle instance per rank of the replica, all from the same cluster fleet, or none:
 * instances taken before a later one turned out to be gone are released again.
 */
export const placeGang = (
  pool: InstancePool,
  run: Run,
  master: Job,
  offers: ReadonlyArray<InstanceOffer>
): Effect.Effect<GangPlacement, StateStoreError> =>
  Effect.gen(function* () {
    const nodes = master.jobSpec.jobsPerReplica
    const ranks = run.jobs
      .filter((j) => j.jobSpec.replicaNum === master.jobSpec.replicaNum)
      .sort((a, b) => a.jobSpec.jobNum - b.jobSpec.jobNum)
    const byFleet = new Map<string, Array<InstanceOffer>>()
    for (const offer of offers) {
      if (offer.instanceId === undefined || offer.fleetName === undefined) continue
      const list = byFleet.get(offer.fleetName) ?? []
      list.push(offer)
      byFleet.set(offer.fleetName, list)
    }
    const fleets = [...byFleet.entries()].filter(([, list]) => list.length >= nodes)
    if (fleets.length === 0) {
      const best = Math.max(0, ...[...byFleet.values()].map((l) => l.length))
      return {
        _tag: "NoFleet",
        message: `nodes: ${nodes} needs ${nodes} idle instances of one placement: cluster fleet that fit; the best has ${best}`
      }
    }
    for (const [fleetName, list] of fleets) {
      const taken: Array<Placement> = []
      for (const offer of list) {
        if (taken.length === nodes) break
        const got = yield* pool.takeIdle(offer, ranks[taken.length].jobSpec.jobName)
        if (Option.isSome(got)) taken.push(got.value)
      }
      if (taken.length === nodes) {
        return { _tag: "Placed", placements: new Map(taken.map((p, i) => [ranks[i].jobSpec.jobNum, p])) }
      }
      // Not enough left in this fleet (taken meanwhile, or not answering): give them back.
      yield* Effect.forEach(taken, (p) => pool.release(p.instanceId), { discard: true })
      yield* Effect.logDebug(`fleet ${fleetName}: only ${taken.length} of ${nodes} instances could be taken`)
    }
    return { _tag: "Taken", message: `nodes: ${nodes}: the cluster fleets' idle instances were taken by other jobs meanwhile` }
  })
