/**
 * The StateStore on a real PostgreSQL server: core's SQL store over the `postgres` driver.
 * Several server replicas share one database: claims use `FOR UPDATE SKIP LOCKED` with
 * leases, and the change feed travels between replicas through LISTEN/NOTIFY.
 */
import { Config, Duration, Effect, Layer, Redacted, Schedule, Schema } from "effect"
import type { ConfigError, Scope } from "effect"
import type postgres from "postgres"
import { SqlDriver, SqlStateStore, StateStore, configDecoder } from "@dstack-ts/core"
import { socketFactory } from "./AnswerWatchdog.ts"

export interface PostgresStateStoreOptions {
  /** A connection string: `postgres://user:password@host:5432/database`. */
  readonly url: string | Redacted.Redacted<string>
  /** Most connections in the pool (default 10); one more is held for LISTEN. */
  readonly maxConnections?: number
  /** Apply pending migrations on start (default true); safe with several replicas at once. */
  readonly migrate?: boolean
  /**
   * Seconds a statement may run (default 15): the database cancels a longer one
   * (`statement_timeout`), and a connection that owes an answer and stays silent 2 s longer is
   * closed by this side — a database that accepts connections and never answers fails queries
   * as `Unavailable` instead of holding them forever.
   */
  readonly queryTimeout?: number
  /** Seconds to open a connection, TCP and PostgreSQL's handshake (default 10). */
  readonly connectTimeout?: number
}

/** `queryTimeout`'s default, in seconds. */
export const DEFAULT_QUERY_TIMEOUT = 15
/** `connectTimeout`'s default, in seconds. */
export const DEFAULT_CONNECT_TIMEOUT = 10
/** The channel of the LISTEN connection's heartbeat (see `make`). */
const HEARTBEAT_CHANNEL = "dstack_ts_heartbeat"
/** How much longer than the statement timeout a silent connection is kept. */
const SILENCE_GRACE_MS = 2000

/** The options a server configuration may give (`state: { driver: postgres, url: … }`). */
export const PostgresStateStoreConfig = Schema.Struct({
  url: Schema.String,
  maxConnections: Schema.optional(Schema.Int.pipe(Schema.positive())).pipe(Schema.fromKey("max_connections")),
  migrate: Schema.optional(Schema.Boolean),
  queryTimeout: Schema.optional(Schema.Number.pipe(Schema.positive())).pipe(Schema.fromKey("query_timeout")),
  connectTimeout: Schema.optional(Schema.Number.pipe(Schema.positive())).pipe(Schema.fromKey("connect_timeout"))
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

/** The driver's own connection failures (no SQLSTATE): `CONNECT_TIMEOUT`, `CONNECTION_CLOSED`, … */
const DRIVER_CONNECTION_CODES = /^(CONNECT_TIMEOUT|CONNECTION_\w+|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENETUNREACH)$/

/**
 * A driver failure as an SqlError; the driver's connection failures carry SQLSTATE 08006
 * (connection_failure), so the store reads them as `Unavailable` whatever their wording.
 */
export const driverError = (cause: unknown, connectTimeout?: number): SqlDriver.SqlError => {
  const e = SqlDriver.toSqlError(cause)
  if (e.code === undefined || !DRIVER_CONNECTION_CODES.test(e.code)) return e
  const message = e.code === "CONNECT_TIMEOUT" && connectTimeout !== undefined
    ? `could not connect to PostgreSQL within ${connectTimeout} s (connect_timeout): ${e.message}`
    : `${e.message} (${e.code})`
  return new SqlDriver.SqlError({ message, code: "08006", cause })
}

/**
 * The bound on one driver call as seen from here: a connection, then the statement, then the
 * watchdog's grace — a backstop for what the watchdog does not see (waits for a pooled
 * connection, TLS connections).
 */
const callBound = (timeouts: Timeouts) =>
  Duration.millis((timeouts.connectTimeout + timeouts.queryTimeout) * 1000 + 2 * SILENCE_GRACE_MS)

interface Timeouts {
  readonly queryTimeout: number
  readonly connectTimeout: number
}

const bounded = <A>(what: string, timeouts: Timeouts, promise: () => Promise<A>): Effect.Effect<A, SqlDriver.SqlError> =>
  Effect.tryPromise({ try: promise, catch: (e) => driverError(e, timeouts.connectTimeout) }).pipe(
    Effect.timeoutFail({
      duration: callBound(timeouts),
      onTimeout: () =>
        new SqlDriver.SqlError({
          message: `PostgreSQL did not complete ${what} within ${Duration.format(callBound(timeouts))} (connect_timeout + query_timeout)`,
          code: "08006"
        })
    })
  )

const connectionOf = (
  sql: Sql | postgres.ReservedSql<Record<string, never>>,
  timeouts: Timeouts
): SqlDriver.SqlConnection => ({
  query: (text, params = []) =>
    // The statements are core's own, fixed text with numbered parameters.
    bounded("a statement", timeouts, () => sql.unsafe(text, params as Array<postgres.ParameterOrJSON<never>>)).pipe(
      Effect.map((rows) => rows as unknown as ReadonlyArray<SqlDriver.Row>)
    )
})

/** A driver over a `postgres` pool: transactions on a reserved connection. */
export const makeDriver = (
  sql: Sql,
  timeouts: Timeouts = { queryTimeout: DEFAULT_QUERY_TIMEOUT, connectTimeout: DEFAULT_CONNECT_TIMEOUT }
): SqlDriver.SqlDriver => ({
  name: "postgres",
  ...connectionOf(sql, timeouts),
  transaction: (use) =>
    Effect.acquireUseRelease(
      bounded("reserving a connection", timeouts, () => sql.reserve()),
      (reserved) => SqlDriver.transactionOn(connectionOf(reserved, timeouts), use),
      (reserved) => Effect.sync(() => reserved.release())
    ),
  listen: (channel, onMessage) =>
    Effect.acquireRelease(
      bounded("LISTEN", timeouts, () => sql.listen(channel, onMessage)),
      // A database gone silent fails the UNLISTEN too: nothing to undo then.
      (request) => Effect.tryPromise(() => request.unlisten()).pipe(Effect.ignore)
    ).pipe(Effect.asVoid)
})

/** Connects, migrates and returns the store; the pool closes with the scope. */
export const make = (
  options: PostgresStateStoreOptions
): Effect.Effect<StateStore.StateStoreService, StateStore.StateStoreError, Scope.Scope> =>
  Effect.gen(function* () {
    const timeouts: Timeouts = {
      queryTimeout: options.queryTimeout ?? DEFAULT_QUERY_TIMEOUT,
      connectTimeout: options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT
    }
    // The driver is loaded with the first store that needs it: a server on the embedded store
    // (the default build lists this plugin too) never does.
    const loaded = yield* Effect.tryPromise({ try: () => import("postgres"), catch: (e) => unavailable("connect", e) })
    const connect = ((loaded as { default?: typeof loaded }).default ?? loaded) as typeof loaded
    const sql = yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          const url = Redacted.isRedacted(options.url) ? Redacted.value(options.url) : options.url
          const driverOptions = {
            max: options.maxConnections ?? 10,
            onnotice: () => {},
            // Reads of timestamps, json and bytea come back as Date, objects and Buffers; int8
            // stays a string (core casts where it needs numbers).
            connect_timeout: timeouts.connectTimeout,
            // The database cancels a statement that runs too long (SQLSTATE 57014)…
            connection: { statement_timeout: Math.round(timeouts.queryTimeout * 1000) }
          }
          // The TLS the URL asks for (`sslmode`, `sslrootcert=system`, `sslnegotiation`), as the
          // driver reads it; no connection is opened for this.
          const parsed = (connect(url, driverOptions as postgres.Options<{}>) as unknown as { options: { ssl: unknown; sslnegotiation?: unknown } }).options
          return connect(url, {
            ...driverOptions,
            // …and a connection that owes an answer and stays silent is closed here: the socket
            // factory opens the connections, TLS included, so that it sees their plaintext.
            // (`socket` is an option of the driver that its types leave out.)
            ssl: false,
            socket: socketFactory({
              queryTimeoutMs: timeouts.queryTimeout * 1000,
              graceMs: SILENCE_GRACE_MS,
              connectTimeoutMs: timeouts.connectTimeout * 1000,
              ssl: parsed.ssl,
              sslnegotiation: parsed.sslnegotiation
            })
          } as postgres.Options<{}>) as unknown as Sql
        },
        catch: (e) => unavailable("connect", e)
      }),
      (sql) => Effect.promise(() => sql.end({ timeout: 5 })).pipe(Effect.ignore)
    )
    // Fail at start, with a clear reason, when the server cannot be reached.
    yield* bounded("a first statement", timeouts, () => sql.unsafe("SELECT 1")).pipe(
      Effect.mapError((e) => unavailable("connect", e))
    )
    // The LISTEN connection only ever reads, so a silent database would leave it waiting for
    // notifications forever: a heartbeat asks it something (LISTEN and UNLISTEN of a channel of
    // its own), which the watchdog times; the driver then opens a new one and listens again.
    yield* Effect.tryPromise(() => sql.listen(HEARTBEAT_CHANNEL, () => {}).then((h) => h.unlisten())).pipe(
      Effect.ignore,
      Effect.repeat(Schedule.spaced(Duration.seconds(Math.min(Math.max(timeouts.queryTimeout, 1), 30)))),
      Effect.forkScoped
    )
    const driver = makeDriver(sql, timeouts)
    const store = yield* SqlStateStore.make(
      driver,
      options.migrate === undefined ? {} : { migrate: options.migrate }
    )
    // Several replicas share this database: the server then asks for a shared blob store too.
    return { ...store, reach: "shared" as const, peers: SqlStateStore.peerMessages(driver) }
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
