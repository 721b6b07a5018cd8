/**
 * The narrow contract between the SQL state store and a PostgreSQL-speaking driver: run a
 * statement, run a transaction on one connection, listen on a channel. Core ships the PGlite
 * driver (EmbeddedStateStore.ts); `@dstack-ts/state-postgres` ships one for a real server.
 */
import { Data, Effect } from "effect"
import type { Scope } from "effect"

/** A failure reported by a driver, with PostgreSQL's SQLSTATE when there is one. */
export class SqlError extends Data.TaggedError("SqlError")<{
  readonly message: string
  /** SQLSTATE, e.g. `23505` for a unique violation. */
  readonly code?: string
  /** The constraint involved, when the server names one. */
  readonly constraint?: string
  readonly cause?: unknown
}> {}

export type Row = Record<string, unknown>

/** One connection (or the pool): runs parameterised statements (`$1`, `$2`, …). */
export interface SqlConnection {
  readonly query: (text: string, params?: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>, SqlError>
}

export interface SqlDriver extends SqlConnection {
  /** Names the driver in error messages. */
  readonly name: string
  /**
   * Runs `use` between BEGIN and COMMIT on one connection that nothing else uses meanwhile;
   * ROLLBACK on failure or interruption.
   */
  readonly transaction: <A, E, R>(
    use: (connection: SqlConnection) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | SqlError, R>
  /** Calls `onMessage` with the payload of each NOTIFY on `channel` until the scope closes. */
  readonly listen: (channel: string, onMessage: (payload: string) => void) => Effect.Effect<void, SqlError, Scope.Scope>
}

/** Turns whatever a driver threw into an SqlError, keeping SQLSTATE and constraint. */
export const toSqlError = (cause: unknown): SqlError => {
  if (cause instanceof SqlError) return cause
  const c = cause as { message?: unknown; code?: unknown; constraint?: unknown; constraint_name?: unknown } | null
  const message = typeof c?.message === "string" ? c.message : String(cause)
  const code = typeof c?.code === "string" ? c.code : undefined
  const constraint =
    typeof c?.constraint === "string" ? c.constraint : typeof c?.constraint_name === "string" ? c.constraint_name : undefined
  return new SqlError({
    message,
    ...(code === undefined ? {} : { code }),
    ...(constraint === undefined ? {} : { constraint }),
    cause
  })
}

/** Runs a transaction the plain way: BEGIN, use, COMMIT, or ROLLBACK on any exit but success. */
export const transactionOn = <A, E, R>(
  connection: SqlConnection,
  use: (connection: SqlConnection) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | SqlError, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function* () {
      yield* connection.query("BEGIN")
      const exit = yield* Effect.exit(restore(use(connection)))
      if (exit._tag === "Success") {
        yield* connection.query("COMMIT")
        return exit.value
      }
      yield* connection.query("ROLLBACK").pipe(Effect.ignore)
      return yield* exit
    })
  )
