/**
 * The SQL state store's change feed and its `watch` listeners. Every replica's triggers
 * NOTIFY on one channel (migrations 1, 3, 5); this module LISTENs, puts document and log
 * changes on the feed the engine follows, and tells `watch` listeners (caches of what was
 * read) about documents and access changes.
 */
import { Effect, PubSub, Stream } from "effect"
import type { Queue, Scope } from "effect"
import type { Change, DocumentKind, Invalidation, StateStoreError, StoredDocument } from "../../ports/StateStore.ts"
import type { SqlDriver } from "../SqlDriver.ts"
import { toStoreError } from "./Errors.ts"

/** Of how many documents rows written by this process wait for their notices at most (the oldest go first). */
const WRITTEN_ROWS_KEPT = 256
/** And of one document, its newest so many. */
const ROWS_KEPT_PER_DOCUMENT = 4

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
  /**
   * Runs a write of document `id` made through this store, outside a transaction: the feed's
   * notice of it carries the row written (`Change.row`), whether it comes while the write runs
   * (held until it ends) or after. A follower takes that row as read.
   */
  readonly writing: <A extends StoredDocument | undefined, E>(id: string, write: Effect.Effect<A, E>) => Effect.Effect<A, E>
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
    // Documents with writes of this process in flight, and the notices of them that came
    // meanwhile (PGlite notifies before the statement returns).
    const held = new Map<string, { writes: number; notices: Array<Change> }>()
    // The rows this process wrote whose notices have not come yet, by document (PostgreSQL
    // notifies after the statement returns): a notice of a row's version takes it.
    const written = new Map<string, Array<StoredDocument>>()
    const withRow = (notice: Change): Change => {
      const rows = written.get(notice.id)
      if (rows === undefined || notice.version === undefined) return notice
      const row = rows.find((r) => r.version === notice.version)
      // Rows up to this version are announced now, or were before and their notice was missed.
      const later = rows.filter((r) => r.version > notice.version!)
      if (later.length === 0) written.delete(notice.id)
      else written.set(notice.id, later)
      return row === undefined ? notice : { ...notice, row }
    }
    const writing = <A extends StoredDocument | undefined, E>(id: string, write: Effect.Effect<A, E>): Effect.Effect<A, E> =>
      Effect.suspend(() => {
        let hold = held.get(id)
        if (hold === undefined) held.set(id, (hold = { writes: 0, notices: [] }))
        const h = hold
        h.writes++
        return write.pipe(
          Effect.tap((row) =>
            Effect.sync(() => {
              if (row === undefined) return
              const rows = written.get(id)
              if (rows !== undefined) {
                rows.push(row)
                if (rows.length > ROWS_KEPT_PER_DOCUMENT) rows.shift()
              } else {
                written.set(id, [row])
                // Documents whose notices never came (a listener that missed them) do not pile up.
                if (written.size > WRITTEN_ROWS_KEPT) written.delete(written.keys().next().value!)
              }
            })
          ),
          Effect.ensuring(Effect.sync(() => {
            if (--h.writes > 0) return
            held.delete(id)
            for (const notice of h.notices) {
              const change = withRow(notice)
              // A notice of this write: the writer reports it to `watch` listeners itself, with its row.
              if (change.row === undefined) report(invalidationOf(change))
              pubsub.unsafeOffer(change)
            }
          }))
        )
      })
    yield* driver
      .listen(CHANGES_CHANNEL, (payload) => {
        const change = decodeNotification(payload)
        if (change === undefined) return
        if (change === "access") return report({ kind: "access" })
        if (change.kind === "log") return pubsub.unsafeOffer(change)
        // A document this process is writing: told and announced once the write ends.
        const hold = held.get(change.id)
        if (hold !== undefined) return hold.notices.push(change)
        report(invalidationOf(change))
        pubsub.unsafeOffer(withRow(change))
      })
      .pipe(Effect.mapError(toStoreError("changes")))

    return {
      report,
      writing,
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

/** What `watch` listeners are told of a document's notice. */
const invalidationOf = (change: Change): Invalidation =>
  change.version === undefined ? { kind: change.kind as DocumentKind, id: change.id } : { kind: change.kind as DocumentKind, id: change.id, version: change.version }

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
