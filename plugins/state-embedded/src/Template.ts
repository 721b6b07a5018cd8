/**
 * The template a new embedded database starts from: a dump of a freshly initialised, fully
 * migrated database, kept in a file and shared by every process on the machine. initdb and the
 * migrations cost 5 s on a quiet machine and 10–24 s on a loaded one; loading the dump costs
 * a second or two.
 *
 * The file is named by the PGlite version and a hash of the migrations, so a template is only
 * ever used by the code that made it. It holds a header line, the SHA-256 of the dump and the
 * dump (PGlite's `dumpDataDir` tar, gzipped); it is written under a temporary name and
 * renamed, so a reader sees a whole file or none. Whatever goes wrong with a template (missing,
 * unreadable, cut short, a wrong checksum, a database without exactly our migrations) is said
 * at debug level and the store is made the plain way instead; a bad file is replaced.
 *
 * Each build with other migrations (or another PGlite) has a file of its own (~10–40 MB), so a
 * write also prunes the directory: the templates of other builds but the `KEPT_OTHERS` written
 * last go (a build whose template went makes it again the plain way, once), and so do temporary
 * files a killed writer left an hour or more ago.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import * as zlib from "node:zlib"
import { Effect } from "effect"
import { StateMigrations } from "@dstack-ts/core"

type Migration = StateMigrations.Migration

const MAGIC = "dstack-ts embedded state template 1\n"
/** How many templates of other builds a write leaves beside its own (the ones written last). */
export const KEPT_OTHERS = 2
/** A writer's temporary file older than this was left by a process that died. */
const STALE_TMP_MS = 60 * 60 * 1000
/** How every template's file name starts (see `file`); the pruned names are matched by it. */
const NAME_PREFIX = "state-embedded-pglite-"
const TEMPLATE_NAME = new RegExp(`^${NAME_PREFIX}.+\\.template$`)
const TMP_NAME = new RegExp(`^${NAME_PREFIX}.+\\.template\\.\\d+\\.[0-9a-z]*\\.tmp$`)
const HASH_HEX = 64

/**
 * Where templates are kept: `DSTACK_TS_CACHE_DIR`, else `$XDG_CACHE_HOME/dstack-ts`, else
 * `~/.cache/dstack-ts`, else `dstack-ts-cache` in the OS's temp directory.
 */
export const defaultDir = (): string => {
  const env = process.env
  if (env.DSTACK_TS_CACHE_DIR) return path.resolve(env.DSTACK_TS_CACHE_DIR)
  if (env.XDG_CACHE_HOME && path.isAbsolute(env.XDG_CACHE_HOME)) return path.join(env.XDG_CACHE_HOME, "dstack-ts")
  let home = ""
  try {
    home = os.homedir()
  } catch {
    // no home directory: the temp directory below
  }
  return home ? path.join(home, ".cache", "dstack-ts") : path.join(os.tmpdir(), "dstack-ts-cache")
}

let pgliteVersion: string | undefined

/** The installed PGlite's version, read from its package.json. */
const readPgliteVersion = (): string => {
  if (pgliteVersion !== undefined) return pgliteVersion
  let dir = path.dirname(createRequire(import.meta.url).resolve("@electric-sql/pglite"))
  for (let i = 0; i < 5; i++) {
    const file = path.join(dir, "package.json")
    if (fs.existsSync(file)) {
      const pkg = JSON.parse(fs.readFileSync(file, "utf8")) as { name?: unknown; version?: unknown }
      if (pkg.name === "@electric-sql/pglite" && typeof pkg.version === "string") return (pgliteVersion = pkg.version)
    }
    dir = path.dirname(dir)
  }
  throw new Error("the installed @electric-sql/pglite's version was not found")
}

/** A hash of the migrations (versions, names, statements): any change to them names another file. */
export const migrationsHash = (migrations: ReadonlyArray<Migration> = StateMigrations.migrations): string =>
  createHash("sha256")
    .update(JSON.stringify(migrations.map((m) => [m.version, m.name, m.statements])))
    .digest("hex")

/** The template's file for this PGlite and these migrations. */
export const file = (dir: string, migrations: ReadonlyArray<Migration> = StateMigrations.migrations): string =>
  path.join(dir, `${NAME_PREFIX}${readPgliteVersion()}-${migrationsHash(migrations).slice(0, 16)}.template`)

const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/**
 * The dump in the template file (an uncompressed tar), checked against its checksum;
 * `undefined` when there is none or it is damaged (a damaged file is removed, so the next store
 * writes a good one).
 */
export const read = (templateFile: string): Effect.Effect<Uint8Array | undefined> =>
  Effect.gen(function* () {
    const bytes = yield* Effect.try(() => fs.readFileSync(templateFile)).pipe(
      Effect.catchAll((e) =>
        Effect.as(
          Effect.logDebug(
            (e.error as { code?: string }).code === "ENOENT"
              ? `embedded store: no template at ${templateFile} yet`
              : `embedded store: the template ${templateFile} could not be read: ${describe(e.error)}`
          ),
          undefined
        )
      )
    )
    if (bytes === undefined) return undefined
    const header = MAGIC.length + HASH_HEX + 1
    const damage = bytes.length <= header || bytes.subarray(0, MAGIC.length).toString("latin1") !== MAGIC
      ? "not a template file or cut short"
      : bytes[header - 1] !== 0x0a
      ? "a damaged header"
      : createHash("sha256").update(bytes.subarray(header)).digest("hex") !== bytes.subarray(MAGIC.length, header - 1).toString("latin1")
      ? "its checksum does not match (damaged or cut short)"
      : undefined
    const tar = damage === undefined
      ? yield* Effect.tryPromise(() => gunzip(bytes.subarray(header))).pipe(Effect.option)
      : undefined
    if (tar !== undefined && tar._tag === "Some") return new Uint8Array(tar.value.buffer, tar.value.byteOffset, tar.value.byteLength)
    yield* Effect.logDebug(`embedded store: the template ${templateFile} is not used: ${damage ?? "it does not unzip"}`)
    yield* discard(templateFile)
    return undefined
  })

const gzip = promisify(zlib.gzip)
const gunzip = promisify(zlib.gunzip)

/**
 * Writes the template (`dump`: an uncompressed tar from `dumpDataDir("none")`) atomically: a
 * temporary name, then a rename. A failure is only logged.
 */
export const write = (templateFile: string, dump: Uint8Array): Effect.Effect<void> =>
  Effect.tryPromise(async () => {
    const body = await gzip(dump)
    const sum = createHash("sha256").update(body).digest("hex")
    fs.mkdirSync(path.dirname(templateFile), { recursive: true })
    const tmp = `${templateFile}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`
    try {
      fs.writeFileSync(tmp, Buffer.concat([Buffer.from(`${MAGIC}${sum}\n`, "latin1"), body]))
      fs.renameSync(tmp, templateFile)
    } finally {
      fs.rmSync(tmp, { force: true })
    }
  }).pipe(
    Effect.zipRight(Effect.logDebug(`embedded store: wrote the template ${templateFile}`)),
    Effect.zipRight(prune(templateFile)),
    Effect.catchAll((e) => Effect.logDebug(`embedded store: the template ${templateFile} could not be written: ${describe(e.error)}`))
  )

/**
 * Removes, beside `templateFile`, the templates of other builds but the `KEPT_OTHERS` most
 * recently written, and writers' temporary files left an hour or more ago. Each removal is said
 * at debug level; one that fails (another process removed it first, no permission) is skipped.
 */
export const prune = (templateFile: string, now: number = Date.now()): Effect.Effect<void> =>
  Effect.gen(function* () {
    const dir = path.dirname(templateFile)
    const own = path.basename(templateFile)
    const names = yield* Effect.try(() => fs.readdirSync(dir)).pipe(Effect.orElseSucceed((): Array<string> => []))
    const stat = (name: string) => {
      try {
        return fs.statSync(path.join(dir, name))
      } catch {
        return undefined
      }
    }
    const others = names
      .filter((n) => n !== own && TEMPLATE_NAME.test(n))
      .flatMap((n) => {
        const st = stat(n)
        return st?.isFile() ? [{ name: n, written: st.mtimeMs }] : []
      })
      .sort((a, b) => b.written - a.written)
    const stale = names.filter((n) => TMP_NAME.test(n) && (stat(n)?.mtimeMs ?? now) <= now - STALE_TMP_MS)
    for (const name of [...others.slice(KEPT_OTHERS).map((o) => o.name), ...stale]) {
      const removed = yield* Effect.try(() => fs.rmSync(path.join(dir, name), { force: true })).pipe(Effect.either)
      yield* Effect.logDebug(
        removed._tag === "Right"
          ? `embedded store: removed ${path.join(dir, name)} (${TMP_NAME.test(name) ? "a temporary file a writer left" : "another build's template, not among the last written"})`
          : `embedded store: could not remove ${path.join(dir, name)}: ${describe(removed.left.error)}`
      )
    }
  })

/**
 * Writes the database in `dump` (a tar from `dumpDataDir`) as the directory `pgdata`: extracted
 * beside it and renamed, so a process killed half-way leaves no half-made database behind.
 */
export const extract = (dump: Uint8Array, pgdata: string): Effect.Effect<void, Error> =>
  Effect.tryPromise({
    try: async () => {
      const { x } = await import("tar")
      const tmp = `${pgdata}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`
      try {
        fs.mkdirSync(tmp, { recursive: true, mode: 0o700 })
        await new Promise<void>((resolve, reject) => {
          const unpack = x({ cwd: tmp })
          unpack.on("error", reject)
          unpack.on("close", () => resolve())
          unpack.end(Buffer.from(dump.buffer, dump.byteOffset, dump.byteLength))
        })
        fs.renameSync(tmp, pgdata)
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true })
      }
    },
    catch: (e) => (e instanceof Error ? e : new Error(String(e)))
  })

/** Removes a template that proved bad; a failure is only logged. */
export const discard = (templateFile: string): Effect.Effect<void> =>
  Effect.try(() => fs.rmSync(templateFile, { force: true })).pipe(
    Effect.catchAll((e) => Effect.logDebug(`embedded store: the bad template ${templateFile} could not be removed: ${describe(e.error)}`))
  )

/**
 * The template's file under `dir`, or `undefined` (said at debug level) when it cannot be named
 * (PGlite's version unknown, e.g. in a bundle without its package.json).
 */
export const locate = (dir: string): Effect.Effect<string | undefined> =>
  Effect.try(() => file(dir)).pipe(
    Effect.catchAll((e) => Effect.as(Effect.logDebug(`embedded store: no template: ${describe(e.error)}`), undefined))
  )

/** Whether the database holds exactly our migrations, by version and name. */
export const hasExactly = (
  rows: ReadonlyArray<Record<string, unknown>>,
  migrations: ReadonlyArray<Migration> = StateMigrations.migrations
): boolean => {
  const want = [...migrations].sort((a, b) => a.version - b.version).map((m) => `${m.version} ${m.name}`)
  const have = rows.map((r) => `${Number(r.version)} ${String(r.name)}`)
  return want.length === have.length && want.every((w, i) => w === have[i])
}
