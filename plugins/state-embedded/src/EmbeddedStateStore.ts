/**
 * The embedded default StateStore: PostgreSQL compiled to WASM (PGlite) in the server's own
 * process, with its files under a directory — no setup, the same SQL as a real PostgreSQL.
 * Job logs go to append-only files beside it (FileLogs.ts): far faster than through WASM.
 *
 * Durability: a write is acknowledged after PostgreSQL wrote its WAL record to the file
 * (through the OS), so a killed process (`kill -9`) loses no acknowledged write. PGlite runs
 * with fsync off, so an OS crash or power loss may lose the last writes: use the PostgreSQL
 * plugin where that matters. One process at a time owns a data directory (a lock file says
 * which); several server replicas need PostgreSQL.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { Config, Effect, Either, ExecutionStrategy, Exit, Layer, Schema, Scope } from "effect"
import type { PGlite } from "@electric-sql/pglite"
import { SqlDriver as Sql, SqlStateStore, StateMigrations, StateStore as StateStorePort, configDecoder } from "@dstack-ts/core"
import * as FileLogs from "./FileLogs.ts"
import * as Template from "./Template.ts"

const { StateStore, StateStoreError } = StateStorePort
type StateStoreError = StateStorePort.StateStoreError
type StateStoreService = StateStorePort.StateStoreService
type StateStore = StateStorePort.StateStore
const { SqlError, toSqlError, transactionOn } = Sql
type SqlError = Sql.SqlError
type Row = Sql.Row
type SqlConnection = Sql.SqlConnection
type SqlDriver = Sql.SqlDriver
const makeSqlStore = SqlStateStore.make
const migrate = StateMigrations.migrate

export interface EmbeddedStateStoreOptions {
  /**
   * Where the store keeps its files (created if missing): the database in `pgdata/`, job logs
   * in `logs/`, the owner's pid in `lock`. Omit for a store in memory only (logs included).
   */
  readonly dataDir?: string
  /**
   * PostgreSQL's `shared_buffers`. Default `16MB`: with it an open store costs about 180 MB
   * of RSS instead of about 300 MB with PostgreSQL's default of 128MB.
   */
  readonly sharedBuffers?: string
  /**
   * Where the template of a new database is kept (a dump of a fresh, fully migrated database,
   * shared by the processes on the machine; see Template.ts), or `false` to make every new
   * database with initdb and the migrations. Default: `DSTACK_TS_CACHE_DIR`, else
   * `$XDG_CACHE_HOME/dstack-ts`, else `~/.cache/dstack-ts`.
   */
  readonly templateDir?: string | false
}

const MODULE = "EmbeddedStateStore"

const storeError = (method: string, e: SqlError | Error | unknown): StateStoreError =>
  e instanceof StateStoreError
    ? e
    : new StateStoreError({
        module: MODULE,
        method,
        reason: "Unavailable",
        message: e instanceof Error || e instanceof SqlError ? e.message : String(e),
        cause: e
      })

// ---------------------------------------------------------------------------------------------
// One owner per data directory

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as { code?: string }).code === "EPERM"
  }
}

/** Takes `<dataDir>/lock`, or fails naming the live process that holds it. */
const lockDataDir = (dataDir: string): Effect.Effect<void, StateStoreError, Scope.Scope> => {
  const lockFile = path.join(path.resolve(dataDir), "lock")
  return Effect.acquireRelease(
    Effect.try({
      try: () => {
        fs.mkdirSync(path.dirname(lockFile), { recursive: true })
        for (let attempt = 0; attempt < 2; attempt++) {
          try {
            fs.writeFileSync(lockFile, String(process.pid), { flag: "wx" })
            return
          } catch (e) {
            if ((e as { code?: string }).code !== "EEXIST") throw e
            const holder = Number.parseInt(fs.readFileSync(lockFile, "utf8"), 10)
            if (Number.isInteger(holder) && holder !== process.pid && isAlive(holder)) {
              throw new Error(`the data directory ${dataDir} is in use by process ${holder}`)
            }
            // A stale lock from a process that died (kill -9): take it over.
            fs.rmSync(lockFile, { force: true })
          }
        }
        throw new Error(`could not lock the data directory ${dataDir}`)
      },
      catch: (e) => storeError("open", e)
    }),
    () => Effect.sync(() => fs.rmSync(lockFile, { force: true }))
  )
}

// ---------------------------------------------------------------------------------------------
// Driver

const open = (options: EmbeddedStateStoreOptions, loadDataDir?: Uint8Array): Effect.Effect<PGlite, StateStoreError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        const { PGlite } = await import("@electric-sql/pglite")
        return PGlite.create({
          ...(options.dataDir === undefined ? {} : { dataDir: options.dataDir }),
          ...(loadDataDir === undefined ? {} : { loadDataDir: new Blob([loadDataDir as Uint8Array<ArrayBuffer>]) }),
          startParams: [...PGlite.defaultStartParams, "-c", `shared_buffers=${options.sharedBuffers ?? "16MB"}`]
        })
      },
      catch: (e) => storeError("open", e)
    }),
    (db) => Effect.promise(() => db.close()).pipe(Effect.ignore)
  )

/** A driver over one PGlite instance: one connection, so statements take turns. */
export const makeDriver = (db: PGlite): Effect.Effect<SqlDriver> =>
  Effect.gen(function* () {
    // Statements take turns in a first-come queue of our own: Effect's semaphore costs time in
    // the number of waiters for every hand-over, which made thousands of queued statements
    // quadratic (1,200 concurrent SELECTs took 7.3 s through it, against ~0.2 s here).
    const waiters: Array<() => void> = []
    let busy = false
    const take = Effect.async<void>((resume) => {
      if (!busy) {
        busy = true
        resume(Effect.void)
      } else {
        waiters.push(() => resume(Effect.void))
      }
    })
    const handOver = Effect.sync(() => {
      const next = waiters.shift()
      if (next === undefined) busy = false
      else next()
    })
    // Taking a turn is uninterruptible (a waiter interrupted meanwhile still gets its turn and
    // passes it on at once), so no turn is ever lost.
    const turn = { withPermits: (_: 1) => <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.acquireUseRelease(take, () => effect, () => handOver) }
    const raw: SqlConnection = {
      query: (text, params = []) =>
        Effect.tryPromise({
          try: () => db.query<Row>(text, params as Array<unknown>),
          catch: toSqlError
        }).pipe(Effect.map((r) => r.rows))
    }
    // PGlite runs each statement synchronously in WASM and resolves it as a microtask, so a long
    // queue of statements (thousands of runs at work) would run back to back without the event
    // loop ever turning: timers and sockets waited tens of seconds. Before a statement, once
    // 20 ms went by without a turn, the driver lets the event loop turn (setImmediate).
    let turnedAt = Date.now()
    const letLoopTurn = Effect.suspend(() =>
      Date.now() - turnedAt < 20
        ? Effect.void
        : Effect.async<void>((resume) => {
          setImmediate(() => {
            turnedAt = Date.now()
            resume(Effect.void)
          })
        })
    )
    return {
      name: "pglite",
      query: (text, params) => turn.withPermits(1)(Effect.zipRight(letLoopTurn, raw.query(text, params))),
      transaction: (use) => turn.withPermits(1)(Effect.zipRight(letLoopTurn, transactionOn(raw, use))),
      listen: (channel, onMessage) =>
        Effect.acquireRelease(
          turn.withPermits(1)(Effect.tryPromise({ try: () => db.listen(channel, onMessage), catch: toSqlError })),
          (unlisten) => Effect.promise(() => unlisten()).pipe(Effect.ignore)
        ).pipe(Effect.asVoid)
    } satisfies SqlDriver
  })

// ---------------------------------------------------------------------------------------------
// New databases start from a template

// A fresh, fully migrated database as an uncompressed tar, per process: read from the template
// file (`file`, as it was at `stamp`), or made here for memory stores when there is no template
// yet.
let fresh: { readonly dump: Uint8Array; readonly file: string | undefined; readonly stamp?: string } | undefined

/** The file's identity and version: another stamp, another file (rewritten or replaced). */
const stampOf = (file: string): string | undefined => {
  try {
    const st = fs.statSync(file)
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`
  } catch {
    return undefined
  }
}

const dumpTurn = Effect.unsafeMakeSemaphore(1)

const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/** The database's dump, after a checkpoint (so a database loaded from it needs no recovery). */
const dumpOf = (db: PGlite): Effect.Effect<Uint8Array, StateStoreError> =>
  Effect.tryPromise({
    try: async () => {
      await db.query("CHECKPOINT")
      return new Uint8Array(await (await db.dumpDataDir("none")).arrayBuffer())
    },
    catch: (e) => storeError("open", e)
  })

/**
 * The template's dump, from this process's copy while the file is unchanged, else read from the
 * file (and kept when `keep`: memory stores; a server's one store on disk does not hold 40 MB
 * for nothing); `undefined` when there is none.
 */
const templateDump = (file: string, keep: boolean): Effect.Effect<Uint8Array | undefined> =>
  dumpTurn.withPermits(1)(
    Effect.suspend(() => {
      const stamp = stampOf(file)
      return fresh !== undefined && fresh.file === file && fresh.stamp === stamp
        ? Effect.succeed(fresh.dump)
        : Effect.tap(Template.read(file), (dump) => {
            if (dump !== undefined && keep) fresh = { dump, file, ...(stamp === undefined ? {} : { stamp }) }
          })
    })
  )

/** A template that proved bad: removed, and forgotten by this process. */
const forget = (file: string): Effect.Effect<void> =>
  Effect.zipRight(
    Effect.sync(() => {
      if (fresh?.file === file) fresh = undefined
    }),
    Template.discard(file)
  )

/**
 * A fresh database made here when there is no template (initdb and the migrations, once per
 * process), written as the template for the processes after.
 */
const madeDump = (file: string | undefined): Effect.Effect<Uint8Array, StateStoreError> =>
  dumpTurn.withPermits(1)(
    Effect.suspend(() =>
      fresh !== undefined && fresh.file === undefined
        ? Effect.succeed(fresh.dump)
        : Effect.scoped(
            Effect.gen(function* () {
              const db = yield* open({})
              yield* migrate(yield* makeDriver(db)).pipe(Effect.mapError((e) => storeError("open", e)))
              const dump = yield* dumpOf(db)
              fresh = { dump, file: undefined }
              if (file !== undefined) yield* Template.write(file, dump)
              return dump
            })
          )
    )
  )

/**
 * Opens a database loaded from the template, in a scope of its own: kept (closed with the
 * caller's scope) when it opens and holds exactly this build's migrations; else closed again,
 * the reason said at debug level, and `undefined`.
 */
const openFromTemplate = (
  options: EmbeddedStateStoreOptions,
  dump: Uint8Array | undefined,
  file: string
): Effect.Effect<PGlite | undefined, never, Scope.Scope> =>
  Effect.gen(function* () {
    const inner = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const opened = yield* open(options, dump).pipe(
      Scope.extend(inner),
      Effect.flatMap((db) =>
        Effect.tryPromise(() => db.query<Row>("SELECT version, name FROM dstack_migrations ORDER BY version")).pipe(
          Effect.flatMap((r) =>
            Template.hasExactly(r.rows) ? Effect.succeed(db) : Effect.fail(new Error("its database does not hold exactly this build's migrations"))
          )
        )
      ),
      Effect.either
    )
    if (Either.isRight(opened)) {
      yield* Effect.logDebug(`embedded store: a new database from the template ${file}`)
      return opened.right
    }
    const cause = opened.left instanceof StateStoreError ? opened.left.message : describe((opened.left as { error?: unknown }).error ?? opened.left)
    yield* Effect.logDebug(`embedded store: the template ${file} is not used: ${cause}`)
    yield* Scope.close(inner, Exit.void)
    return undefined
  })

// initdb runs in a second WASM instance that the process never gives back: a first start
// in-process leaves the server at ~750 MB of RSS instead of ~180 MB. So a new data directory
// is initialised by a short-lived child of the same runtime (node or deno) when there is one;
// elsewhere (a compiled binary, a bundle without import.meta.resolve) it happens in-process.
const initInChild = (pgdata: string): Effect.Effect<boolean> =>
  Effect.async<boolean>((resume) => {
    const runtime = path.basename(process.execPath).replace(/\.exe$/, "")
    let url: string
    try {
      url = import.meta.resolve("@electric-sql/pglite")
    } catch {
      resume(Effect.succeed(false))
      return
    }
    if (runtime !== "node" && runtime !== "nodejs" && runtime !== "deno") {
      resume(Effect.succeed(false))
      return
    }
    const code = [
      `const { PGlite } = await import(${JSON.stringify(url)})`,
      `const db = await PGlite.create({ dataDir: ${JSON.stringify(pgdata)} })`,
      `await db.close()`
    ].join("\n")
    const args = runtime === "deno" ? ["eval", "--ext=js", code] : ["--input-type=module", "-e", code]
    let child: ReturnType<typeof spawn>
    try {
      child = spawn(process.execPath, args, { stdio: "ignore" })
    } catch {
      resume(Effect.succeed(false))
      return
    }
    child.on("error", () => resume(Effect.succeed(false)))
    child.on("exit", (code) => resume(Effect.succeed(code === 0 && fs.existsSync(path.join(pgdata, "PG_VERSION")))))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const prepare = (pgdata: string): Effect.Effect<void> =>
  Effect.gen(function* () {
    if (fs.existsSync(path.join(pgdata, "PG_VERSION"))) return
    const done = yield* initInChild(pgdata)
    // A half-made directory from a failed child would make PGlite skip initdb: clear it.
    if (!done) fs.rmSync(pgdata, { recursive: true, force: true })
  })

/** Opens the embedded store; closes the database when the scope closes. */
export const make = (options: EmbeddedStateStoreOptions = {}): Effect.Effect<StateStoreService, StateStoreError, Scope.Scope> =>
  Effect.gen(function* () {
    const templateDir = options.templateDir ?? Template.defaultDir()
    const file = templateDir === false ? undefined : yield* Template.locate(templateDir)
    if (options.dataDir === undefined) {
      let db: PGlite | undefined
      if (file !== undefined) {
        const dump = yield* templateDump(file, true)
        if (dump !== undefined) db = yield* openFromTemplate(options, dump, file)
        if (dump !== undefined && db === undefined) yield* forget(file)
      }
      db ??= yield* open(options, yield* madeDump(file))
      return yield* makeSqlStore(yield* makeDriver(db))
    }
    const dataDir = options.dataDir
    yield* lockDataDir(dataDir)
    const pgdata = path.resolve(dataDir, "pgdata")
    const storeOn = (driver: SqlDriver) =>
      makeSqlStore(driver, {
        logs: (announce) => FileLogs.make({ dir: path.join(dataDir, "logs"), announce })
      })
    const isNew = !fs.existsSync(path.join(pgdata, "PG_VERSION"))
    if (isNew && file !== undefined) {
      const dump = yield* templateDump(file, false)
      if (dump !== undefined) {
        // Extracted here rather than loaded by PGlite (`loadDataDir`): through its WASM file
        // system the load left the server at ~100 MB more RSS. Without PG_VERSION, what is there
        // is no database.
        fs.rmSync(pgdata, { recursive: true, force: true })
        const extracted = yield* Template.extract(dump, pgdata).pipe(
          Effect.as(true),
          Effect.catchAll((e) => Effect.as(Effect.logDebug(`embedded store: the template ${file} is not used: ${e.message}`), false))
        )
        const db = extracted ? yield* openFromTemplate({ ...options, dataDir: pgdata }, undefined, file) : undefined
        if (db !== undefined) return yield* storeOn(yield* makeDriver(db))
        yield* forget(file)
        // What a failed start left behind would make PGlite skip initdb.
        fs.rmSync(pgdata, { recursive: true, force: true })
      }
    }
    yield* prepare(pgdata)
    const db = yield* open({ ...options, dataDir: pgdata })
    const driver = yield* makeDriver(db)
    if (isNew && file !== undefined) {
      // The database is fresh: migrated and dumped before anything is written to it, it is the
      // template for the stores after.
      yield* migrate(driver).pipe(Effect.mapError((e) => storeError("open", e)))
      yield* dumpOf(db).pipe(
        Effect.flatMap((dump) => Template.write(file, dump)),
        Effect.catchAll((e) => Effect.logDebug(`embedded store: no template written: ${e.message}`))
      )
    }
    return yield* storeOn(driver)
  })

/**
 * The embedded store with its files under `dataDir`.
 *
 * @example
 * const StoreLive = EmbeddedStateStore.layer({ dataDir: path.join(os.homedir(), ".dstack/server/data") })
 */
export const layer = (options: EmbeddedStateStoreOptions & { readonly dataDir: string }): Layer.Layer<StateStore, StateStoreError> =>
  Layer.scoped(StateStore, make(options))

/** A fresh store in memory, gone when the layer's scope closes. */
export const layerMemory = (options: Omit<EmbeddedStateStoreOptions, "dataDir"> = {}): Layer.Layer<StateStore, StateStoreError> =>
  Layer.scoped(StateStore, make(options))

/** The embedded store under the directory read from `config` (e.g. `Config.string("DSTACK_SERVER_DATA_DIR")`). */
export const layerConfig = (config: Config.Config<string>): Layer.Layer<StateStore, StateStoreError | import("effect").ConfigError.ConfigError> =>
  Layer.unwrapEffect(Effect.map(config, (dataDir) => layer({ dataDir })))

/**
 * The plugin's options (server configuration keys): `data_dir` (omit for a store in memory) and
 * `shared_buffers`.
 */
export const EmbeddedStateStoreConfig = Schema.Struct({
  dataDir: Schema.optional(Schema.NonEmptyString).pipe(Schema.fromKey("data_dir")),
  sharedBuffers: Schema.optional(Schema.NonEmptyString).pipe(Schema.fromKey("shared_buffers"))
})

/** The store from the server configuration's options; invalid options fail with `Invalid`. */
export const fromOptions = (options: unknown): Layer.Layer<StateStore, StateStoreError> =>
  Layer.unwrapEffect(
    configDecoder(EmbeddedStateStoreConfig, "embedded state store options")(options).pipe(
      Effect.mapError(
        (e) =>
          new StateStoreError({
            module: MODULE,
            method: "fromOptions",
            reason: "Invalid",
            message: e.message,
            cause: e.cause
          })
      ),
      Effect.map((o) => Layer.scoped(StateStore, make(o)))
    )
  )
