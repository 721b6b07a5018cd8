/**
 * The StateStore on a real PostgreSQL server: core's SQL store over the `postgres` driver.
 * Several server replicas share one database: claims use `FOR UPDATE SKIP LOCKED` with
 * leases, and the change feed travels between replicas through LISTEN/NOTIFY.
 */
import { Config, Effect, Layer, Redacted, Schema } from "effect"
import type { ConfigError, Scope } from "effect"
import postgres from "postgres"
import { SqlDriver, SqlStateStore, StateStore, configDecoder } from "@dstack-ts/core"

export interface PostgresStateStoreOptions {
  /** A connection string: `postgres://user:password@host:5432/database`. */
  readonly url: string | Redacted.Redacted<string>
  /** Most connections in the pool (default 10); one more is held for LISTEN. */
  readonly maxConnections?: number
  /** Apply pending migrations on start (default true); safe with several replicas at once. */
  readonly migrate?: boolean
}

/** The options a server configuration may give (`state: { driver: postgres, url: … }`). */
export const PostgresStateStoreConfig = Schema.Struct({
  url: Schema.String,
  maxConnections: Schema.optional(Schema.Int.pipe(Schema.positive())).pipe(Schema.fromKey("max_connections")),
  migrate: Schema.optional(Schema.Boolean)
})

const unavailable = (method: string, cause: unknown) =>
  new StateStore.StateStoreError({
    module: "PostgresStateStore",
    method,
    reason: "Unavailable",
    message: cause instanceof Error ? cause.message : String(cause),
    cause
  })

type Sql = postgres.Sql<Record<string, never>>

const connectionOf = (sql: Sql | postgres.ReservedSql<Record<string, never>>): SqlDriver.SqlConnection => ({
  query: (text, params = []) =>
    Effect.tryPromise({
      // The statements are core's own, fixed text with numbered parameters.
      try: () => sql.unsafe(text, params as Array<postgres.ParameterOrJSON<never>>),
      catch: SqlDriver.toSqlError
    }).pipe(Effect.map((rows) => rows as unknown as ReadonlyArray<SqlDriver.Row>))
})

/** A driver over a `postgres` pool: transactions on a reserved connection. */
export const makeDriver = (sql: Sql): SqlDriver.SqlDriver => ({
  name: "postgres",
  ...connectionOf(sql),
  transaction: (use) =>
    Effect.acquireUseRelease(
      Effect.tryPromise({ try: () => sql.reserve(), catch: SqlDriver.toSqlError }),
      (reserved) => SqlDriver.transactionOn(connectionOf(reserved), use),
      (reserved) => Effect.sync(() => reserved.release())
    ),
  listen: (channel, onMessage) =>
    Effect.acquireRelease(
      Effect.tryPromise({ try: () => sql.listen(channel, onMessage), catch: SqlDriver.toSqlError }),
      (request) => Effect.promise(() => request.unlisten()).pipe(Effect.ignore)
    ).pipe(Effect.asVoid)
})

/** Connects, migrates and returns the store; the pool closes with the scope. */
export const make = (
  options: PostgresStateStoreOptions
): Effect.Effect<StateStore.StateStoreService, StateStore.StateStoreError, Scope.Scope> =>
  Effect.gen(function* () {
    const sql = yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          postgres(Redacted.isRedacted(options.url) ? Redacted.value(options.url) : options.url, {
            max: options.maxConnections ?? 10,
            onnotice: () => {},
            // Reads of timestamps, json and bytea come back as Date, objects and Buffers; int8
            // stays a string (core casts where it needs numbers).
            connect_timeout: 10
          }) as Sql,
        catch: (e) => unavailable("connect", e)
      }),
      (sql) => Effect.promise(() => sql.end({ timeout: 5 })).pipe(Effect.ignore)
    )
    // Fail at start, with a clear reason, when the server cannot be reached.
    yield* Effect.tryPromise({ try: () => sql.unsafe("SELECT 1"), catch: (e) => unavailable("connect", e) })
    const store = yield* SqlStateStore.make(makeDriver(sql), options.migrate === undefined ? {} : { migrate: options.migrate })
    // Several replicas share this database: the server then asks for a shared blob store too.
    return { ...store, reach: "shared" as const }
  })

/**
 * The PostgreSQL store as a layer.
 *
 * @example
 * const StoreLive = PostgresStateStore.layer({ url: "postgres://dstack@db:5432/dstack" })
 */
export const layer = (options: PostgresStateStoreOptions): Layer.Layer<StateStore.StateStore, StateStore.StateStoreError> =>
  Layer.scoped(StateStore.StateStore, make(options))

/** The store at the URL in `DSTACK_DATABASE_URL` (upstream's variable), or the given config. */
export const layerConfig = (
  url: Config.Config<Redacted.Redacted<string>> = Config.redacted("DSTACK_DATABASE_URL")
): Layer.Layer<StateStore.StateStore, StateStore.StateStoreError | ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(url, (u) => layer({ url: u })))

/** The plugin's factory: options as in a server configuration, decoded first. */
export const fromOptions = (options: unknown): Layer.Layer<StateStore.StateStore, StateStore.StateStoreError> =>
  Layer.unwrapEffect(
    configDecoder(PostgresStateStoreConfig, "postgres state store options")(options).pipe(
      Effect.mapError(
        (e) =>
          new StateStore.StateStoreError({
            module: "PostgresStateStore",
            method: "fromOptions",
            reason: "Invalid",
            message: e.message,
            cause: e.cause
          })
      ),
      Effect.map((o) => layer(o))
    )
  )
