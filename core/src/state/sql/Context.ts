/**
 * The SQL context every table module of the SQL state store shares: one statement runner that
 * joins the caller's transaction, the transaction itself, the reports of changed rows to
 * `watch` listeners, and the write counts that keep the planner's statistics fresh.
 */
import { Effect, FiberRef } from "effect"
import type { Scope } from "effect"
import type { Invalidation, StateStoreError, StoredDocument } from "../../ports/StateStore.ts"
import type { Row, SqlConnection, SqlDriver } from "../SqlDriver.ts"
import { SqlError } from "../SqlDriver.ts"
import { toStoreError } from "./Errors.ts"

/** Runs one statement with numbered parameters (`$1`, `$2`, …). */
export type Sql = (text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>, SqlError>

export interface SqlContext {
  /** Runs a statement on the connection of the transaction the fiber is in, else on the driver. */
  readonly sql: Sql
  /** The store's `withTransaction`: one transaction per outermost call, joined by nested ones. */
  readonly withTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | StateStoreError, R>
  /** Reports a changed document (or `access`) to `watch` listeners now and again when the transaction around it ends. */
  readonly invalidate: (change: Invalidation) => Effect.Effect<void>
  /** Runs a write to users, projects, members or backends, then reports `access`: cached access (and a project's backends) is stale after it. */
  readonly accessWrite: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Runs a write of document `id`: outside a transaction, the change feed's notice of it carries the row written (Changes.ts). */
  readonly writing: <A extends StoredDocument | undefined, E>(id: string, write: Effect.Effect<A, E>) => Effect.Effect<A, E>
  /** Counts rows this process wrote to `table`, analyzing it when the count passes 1k, 10k, 100k, … */
  readonly noteWrites: (table: string, n: number) => Effect.Effect<void>
}

/** Builds the context on `driver` and the change feed (Changes.ts): `report` tells the `watch` listeners. */
export const make = (
  driver: SqlDriver,
  feed: { readonly report: (change: Invalidation) => void; readonly writing: SqlContext["writing"] }
): Effect.Effect<SqlContext, never, Scope.Scope> =>
  Effect.gen(function* () {
    const report = feed.report
    // The connection of the transaction the current fiber is in, if any.
    const currentTx = yield* FiberRef.make<SqlConnection | null>(null)
    const sql: Sql = (text, params = []) => Effect.flatMap(FiberRef.get(currentTx), (tx) => (tx ?? driver).query(text, params))

    // The changes made inside the transaction the current fiber is in, if any.
    const txChanges = yield* FiberRef.make<Array<Invalidation> | null>(null)
    const invalidate = (change: Invalidation): Effect.Effect<void> =>
      Effect.flatMap(FiberRef.get(txChanges), (pending) =>
        Effect.sync(() => {
          // Inside a transaction the row may yet be rolled back: it is not passed on.
          const told = pending !== null && change.kind !== "access" && change.row !== undefined ? { kind: change.kind, id: change.id, version: change.version } : change
          pending?.push(told)
          report(told)
        })
      )
    const accessChanged = invalidate({ kind: "access" })

    const withTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StateStoreError, R> =>
      Effect.flatMap(FiberRef.get(currentTx), (tx) => {
        if (tx !== null) return effect
        const pending: Array<Invalidation> = []
        return driver
          .transaction((connection) => Effect.locally(Effect.locally(effect, currentTx, connection), txChanges, pending))
          .pipe(
            Effect.mapError((e): E | StateStoreError =>
              e instanceof SqlError ? toStoreError("withTransaction")(e) : (e as E)
            ),
            Effect.ensuring(Effect.sync(() => pending.forEach(report)))
          )
      })

    // Planner statistics. PGlite has no autovacuum, so without this a table never gets any and
    // the planner, believing it tiny, sorts a whole job's logs instead of walking the index.
    // Each process analyzes a table when its own writes to it reach 1k, 10k, 100k, … rows:
    // a few cheap ANALYZEs over a server's life (PostgreSQL's autovacuum does the rest there).
    const writes = new Map<string, { count: number; next: number }>()
    const noteWrites = (table: string, n: number): Effect.Effect<void> =>
      Effect.flatMap(FiberRef.get(currentTx), (tx) => {
        const w = writes.get(table) ?? { count: 0, next: 1000 }
        w.count += n
        writes.set(table, w)
        // Not inside a caller's transaction: a failure there would abort it.
        if (w.count < w.next || tx !== null) return Effect.void
        while (w.next <= w.count) w.next *= 10
        return driver.query(`ANALYZE ${table}`).pipe(Effect.ignore)
      })

    return {
      sql,
      withTransaction,
      invalidate,
      accessWrite: (effect) => Effect.ensuring(effect, accessChanged),
      // Inside a transaction the row may yet be rolled back: its notice (at commit) goes bare.
      writing: (id, write) => Effect.flatMap(FiberRef.get(currentTx), (tx) => (tx === null ? feed.writing(id, write) : write)),
      noteWrites
    }
  })
