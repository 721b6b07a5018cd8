/**
 * The SQL state store's change feed and its `watch` listeners. Every replica's triggers
 * NOTIFY on one channel (migrations 1, 3, 5); this module LISTENs, puts document and log
 * changes on the feed the engine follows, and tells `watch` listeners (caches of what was
 * read) about documents and access changes.
 */
import { Effect, PubSub, Stream } from "effect"
import type { Queue, Scope } from "effect"
import type { Change, Invalidation, StateStoreError } from "../../ports/StateStore.ts"
import type { SqlDriver } from "../SqlDriver.ts"
import { toStoreError } from "./Errors.ts"

/** The NOTIFY channel the change triggers publish on. */
export const CHANGES_CHANNEL = "dstack_changes"

export interface ChangeFeed {
  /** Tells every `watch` listener, synchronously. */
  readonly report: (change: Invalidation) => void
  /** Puts a change on the feed without a NOTIFY (for logs kept outside the database). */
  readonly announce: (change: Change) => void
  readonly changes: Stream.Stream<Change>
  readonly subscribe: Effect.Effect<Queue.Dequeue<Change>, never, Scope.Scope>
  readonly watch: (listener: (change: Invalidation) => void) => Effect.Effect<void, never, Scope.Scope>
}

/** Starts listening on `driver` until the scope closes. */
export const make = (driver: SqlDriver): Effect.Effect<ChangeFeed, StateStoreError, Scope.Scope> =>
  Effect.gen(function* () {
    // Told synchronously after each write through this store, again when the transaction
    // around it ends (a reader between the write and the commit saw the old rows), and on the
    // notifications of other replicas' writes (their triggers).
    const watchers = new Set<(change: Invalidation) => void>()
    const report = (change: Invalidation): void => {
      for (const listener of watchers) listener(change)
    }

    const pubsub = yield* Effect.acquireRelease(PubSub.unbounded<Change>(), PubSub.shutdown)
    yield* driver
      .listen(CHANGES_CHANNEL, (payload) => {
        const change = decodeNotification(payload)
        if (change === undefined) return
        if (change === "access") return report({ kind: "access" })
        if (change.kind !== "log") report(change.version === undefined ? { kind: change.kind, id: change.id } : { kind: change.kind, id: change.id, version: change.version })
        pubsub.unsafeOffer(change)
      })
      .pipe(Effect.mapError(toStoreError("changes")))

    return {
      report,
      announce: (change) => {
        pubsub.unsafeOffer(change)
      },
      changes: Stream.fromPubSub(pubsub),
      subscribe: PubSub.subscribe(pubsub),
      watch: (listener) =>
        Effect.acquireRelease(
          Effect.sync(() => watchers.add(listener)),
          () => Effect.sync(() => watchers.delete(listener))
        ).pipe(Effect.asVoid)
    }
  })

/**
 * A NOTIFY payload: a `Change`, or `"access"` from the triggers on users, projects and members
 * (migration 3: nothing to re-read; caches of who may do what are stale), or undefined when not ours.
 */
const decodeNotification = (payload: string): Change | "access" | undefined => {
  try {
    const v = JSON.parse(payload) as { kind?: unknown; id?: unknown; project?: unknown; version?: unknown }
    if (v.kind === "access") return "access"
    if (typeof v.kind === "string" && typeof v.id === "string" && typeof v.project === "string") {
      return { kind: v.kind as Change["kind"], id: v.id, project: v.project, ...(typeof v.version === "number" ? { version: v.version } : {}) }
    }
  } catch {
    // Not ours: someone else NOTIFYing on the channel.
  }
  return undefined
}
