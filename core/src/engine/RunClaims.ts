/**
 * Claiming runs and keeping their leases: which replica works on which run. A run is claimed
 * when something announces a change to it (the store's change feed, or `wake`), and every
 * active run nobody holds is claimed by a periodic resync (after a replica died, its runs are
 * taken over once their leases expire). Each claimed run gets a worker; its lease is renewed,
 * with every other lease of this replica, in one statement, and trusted only until shortly
 * before it would run out unrenewed, so that two replicas never work on one run at once.
 */
import { Cause, Deferred, Duration, Effect, Queue, type Scope } from "effect"
import type { RunStatus } from "../domain/Status.ts"
import type { Lease, StateStoreError, StateStoreService, StoredDocument } from "../ports/StateStore.ts"
import type { KnownRecord, RunRecord } from "./RunRecord.ts"
import { errorMessage } from "./internal.ts"
import type { Signal, WorkerHandle } from "./RunWorker.ts"

export interface RunClaims {
  /**
   * Wakes the worker of a run, claiming the run first when this replica holds it not yet.
   * `version`: the run's version a change-feed notice announced, if it said; `stored`: the
   * record this process wrote, at its version (see `Engine.wake`).
   */
  readonly acquire: (runId: string, version?: number, stored?: KnownRecord) => Effect.Effect<void>
  /** Claims every active run nobody holds, a batch at a time, and starts their workers. */
  readonly claimUnheld: Effect.Effect<void, StateStoreError>
  /** Runs this replica works on right now. */
  readonly activeRuns: Effect.Effect<ReadonlyArray<string>>
}

export interface RunClaimsOptions {
  readonly store: StateStoreService
  /** Names this replica in leases. */
  readonly owner: string
  /** How long a claim lasts without renewal. */
  readonly leaseMs: number
  /** The statuses of runs that need a worker. */
  readonly activeStatuses: ReadonlyArray<RunStatus>
  /** The worker of a claimed run; the scope closes when it ends, before its lease is let go. */
  readonly work: (runId: string, lease: Lease, handle: WorkerHandle, claimedRow: StoredDocument, stored: RunRecord | undefined) => Effect.Effect<void, unknown, Scope.Scope>
}

/** Runs claimed at once by a resync (after a restart there may be thousands waiting). */
const RESYNC_BATCH = 100

export const make = (options: RunClaimsOptions): Effect.Effect<RunClaims, StateStoreError, Scope.Scope> =>
  Effect.gen(function* () {
    const { store, owner, leaseMs, activeStatuses } = options
    const engineScope = yield* Effect.scope
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

    /**
     * Starts the worker of a run this replica just claimed (`row` as the claim answered it;
     * `stored`, the record of that row when this process wrote it).
     */
    const startWorker = (row: StoredDocument, stored?: KnownRecord) =>
      Effect.gen(function* () {
        const runId = row.id
        const lease = row.lease!
        const signals = yield* Queue.unbounded<Signal>()
        const handle: WorkerHandle = { signals, knownVersion: row.version, announcedVersion: row.version, writingFrom: undefined, token: lease.token, trustedUntil: Date.now() + leaseMs - safetyMs, started: yield* Deferred.make<void>() }
        workers.set(runId, handle)
        // Scoped: however the worker ends (lease lost, a failed write, interruption), its
        // followers, provisioning and renewal fibers end with it and before the lease is let go.
        yield* options.work(runId, lease, handle, row, stored !== undefined && stored.version === row.version ? stored.record : undefined).pipe(
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

    // A run being claimed right now (by `wake` and the change feed at once, typically): a
    // second claim would only fail; a change meanwhile is passed on once the worker is up,
    // unless the claim read that version already (a notice names the version it announces, and
    // so does `wake` with the record it stored; a bare `wake` names none and always counts).
    // The record a `wake` brings goes to the worker whichever of the two claims the run.
    const claiming = new Map<string, { changed: boolean; version: number; stored: KnownRecord | undefined }>()

    const acquire = (runId: string, version?: number, stored?: KnownRecord, written?: StoredDocument): Effect.Effect<void> =>
      Effect.gen(function* () {
        const running = workers.get(runId)
        if (running) {
          if (version !== undefined) {
            if (version <= running.knownVersion || version <= running.announcedVersion) return
            running.announcedVersion = version
          }
          const known = stored?.row !== undefined && stored.row.version === stored.version ? { row: stored.row, record: stored.record } : undefined
          return yield* Queue.offer(
            running.signals,
            known !== undefined ? { _tag: "Changed", known } : written !== undefined && written.version === version ? { _tag: "Changed", row: written } : { _tag: "Changed" }
          )
        }
        const inFlight = claiming.get(runId)
        if (inFlight) {
          if (version === undefined) inFlight.changed = true
          else inFlight.version = Math.max(inFlight.version, version)
          if (stored !== undefined) inFlight.stored = stored
          return
        }
        const mark = { changed: false, version: 0, stored }
        claiming.set(runId, mark)
        const claimed = yield* store.runs.claim({ filter: { ids: [runId], statuses: activeStatuses }, owner, leaseMs }).pipe(
          Effect.ensuring(Effect.sync(() => claiming.delete(runId)))
        )
        for (const row of claimed) if (!workers.has(row.id)) yield* startWorker(row, row.id === runId ? mark.stored : undefined)
        const started = workers.get(runId)
        const read = claimed.find((row) => row.id === runId)?.version ?? 0
        if (mark.changed || mark.version > read) {
          if (started) yield* Queue.offer(started.signals, { _tag: "Changed" })
          else yield* acquire(runId)
        }
      }).pipe(Effect.catchAll((e) => Effect.logWarning(`could not claim run ${runId}: ${errorMessage(e)}`)), Effect.asVoid)

    // Every unheld active run, in batches (after a restart there may be thousands).
    // A batch at a time, each claimed once the last one's workers took their first step: runs
    // claimed faster than they can be worked on would hold leases nobody gets to renew in time.
    const claimUnheld = Effect.gen(function* () {
      for (;;) {
        const claimed = yield* store.runs.claim({ filter: { statuses: activeStatuses }, owner, leaseMs, limit: RESYNC_BATCH })
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
    })

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
        // A write of this process comes with its row: the worker takes it as read.
        return acquire(change.id, v, undefined, change.row)
      }),
      Effect.forever,
      Effect.forkIn(engineScope)
    )

    return {
      acquire,
      claimUnheld,
      activeRuns: Effect.sync(() => [...workers.keys()])
    }
  })
