// A new embedded database starts from the template (a dump of a fresh, fully migrated database
// in a file shared by processes): the first store on a machine makes it the plain way and
// writes the template; a store after starts from it. A database made from the template is the same
// as one made the plain way (schema, migrations, the conformance suite), and a damaged template
// or one holding other migrations is not used but replaced.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { PGlite } from "@electric-sql/pglite"
import { Effect, Layer, Logger, LogLevel } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { StateMigrations } from "@dstack-ts/core"
import { testStateStore } from "@dstack-ts/core/testing"
import { EmbeddedStateStore } from "../src/index.ts"
import * as Template from "../src/Template.ts"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-template-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))
const templateDir = path.join(dir, "cache")
const templateFile = Template.file(templateDir)

// Debug lines the store logs, to say which way each database was made.
const logs: Array<string> = []
const capture = Layer.merge(
  Logger.replace(Logger.defaultLogger, Logger.make(({ message }) => void logs.push(Array.isArray(message) ? message.map(String).join(" ") : String(message)))),
  Logger.minimumLogLevel(LogLevel.Debug)
)
const since = (mark: number) => logs.slice(mark).join("\n")

/** Opens a store on a new data directory and closes it; the debug lines it logged. */
const makeStore = (name: string, options: Omit<EmbeddedStateStore.EmbeddedStateStoreOptions, "dataDir"> = { templateDir }) => {
  const mark = logs.length
  return Effect.runPromise(
    Effect.scoped(EmbeddedStateStore.make({ ...options, dataDir: path.join(dir, name) })).pipe(Effect.provide(capture))
  ).then(() => since(mark))
}

/** What a database holds besides its rows: tables, columns, indexes, constraints, functions, triggers, migrations. */
const schemaOf = async (name: string) => {
  const db = await PGlite.create({ dataDir: path.join(dir, name, "pgdata") })
  try {
    const rows = async (sql: string) => (await db.query<Record<string, unknown>>(sql)).rows
    return {
      columns: await rows(`SELECT table_name, column_name, data_type, column_default, is_nullable FROM information_schema.columns
        WHERE table_schema = 'public' ORDER BY table_name, ordinal_position`),
      indexes: await rows(`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname`),
      constraints: await rows(`SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
        WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2`),
      functions: await rows(`SELECT proname, prosrc FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY proname`),
      triggers: await rows(`SELECT event_object_table, trigger_name, event_manipulation, action_statement FROM information_schema.triggers
        ORDER BY 1, 2, 3`),
      migrations: await rows(`SELECT version, name FROM dstack_migrations ORDER BY version`),
      database: await rows(`SELECT datname, pg_encoding_to_char(encoding) AS encoding, datcollate, datctype FROM pg_database ORDER BY datname`)
    }
  } finally {
    await db.close()
  }
}

let plainLogs = ""
let fromTemplateMark = 0
beforeAll(async () => {
  // A well-formed template under this build's name whose database has one migration more.
  const other = [...StateMigrations.migrations, { version: 100_000, name: "not this build's", statements: ["CREATE TABLE not_ours (id int)"] }]
  const db = await PGlite.create()
  await Effect.runPromise(Effect.flatMap(EmbeddedStateStore.makeDriver(db), (driver) => StateMigrations.migrate(driver, other)))
  const dump = new Uint8Array(await (await db.dumpDataDir("none")).arrayBuffer())
  await db.close()
  await Effect.runPromise(Template.write(templateFile, dump))
  // The first store refuses it, is made the plain way and writes the template.
  plainLogs = await makeStore("plain")
  fromTemplateMark = logs.length
}, 120_000)

describe("the template of a new embedded database", () => {
  it("holding other migrations is not used: the first store is made the plain way and replaces it", async () => {
    expect(plainLogs).toContain(`the template ${templateFile} is not used: its database does not hold exactly this build's migrations`)
    expect(plainLogs).not.toContain("a new database from the template")
    expect(plainLogs).toContain(`wrote the template ${templateFile}`)
    const schema = await schemaOf("plain")
    expect(schema.columns.some((c) => c.table_name === "not_ours")).toBe(false)
    expect(schema.migrations.map((m) => Number(m.version))).toEqual(StateMigrations.migrations.map((m) => m.version))
  }, 60_000)
})

// The conformance suite on a store made from the template (built after the beforeAll above); the
// plain way makes the same database (the schema test below), so the suite is not run on both.
testStateStore("embedded, on disk, from the template", Layer.provide(EmbeddedStateStore.layer({ dataDir: path.join(dir, "from-template"), templateDir }), capture))

describe("a database made from the template", () => {
  it("was loaded from the template, and is the same as one made the plain way", async () => {
    expect(since(fromTemplateMark)).toContain(`a new database from the template ${templateFile}`)
    const plain = await schemaOf("plain")
    const fromTemplate = await schemaOf("from-template")
    expect(plain.migrations.map((m) => Number(m.version))).toEqual(StateMigrations.migrations.map((m) => m.version))
    expect(plain.columns.length).toBeGreaterThan(50)
    expect(fromTemplate).toEqual(plain)
  }, 60_000)
})

describe("a template that cannot be used", () => {
  // Then a store finds none and makes the database the plain way, writing the template again
  // (as the first store above).
  it("is refused when damaged or cut short, and removed", async () => {
    const good = fs.readFileSync(templateFile)
    const damaged = Buffer.from(good)
    damaged[damaged.length >> 1] ^= 0xff
    for (const [what, bytes] of [["damaged", damaged], ["cut short", good.subarray(0, good.length >> 1)], ["empty", Buffer.alloc(0)]] as const) {
      fs.writeFileSync(templateFile, bytes)
      const mark = logs.length
      const dump = await Effect.runPromise(Template.read(templateFile).pipe(Effect.provide(capture)))
      expect(dump, what).toBeUndefined()
      expect(since(mark), what).toContain(`the template ${templateFile} is not used`)
      expect(fs.existsSync(templateFile), what).toBe(false)
    }
    fs.writeFileSync(templateFile, good)
    expect(await Effect.runPromise(Template.read(templateFile))).toBeInstanceOf(Uint8Array)
  })

  it("made for other migrations or another PGlite: another file", () => {
    const changed = StateMigrations.migrations.map((m, i) =>
      i === StateMigrations.migrations.length - 1 ? { ...m, statements: [...m.statements, "SELECT 1"] } : m
    )
    expect(Template.migrationsHash(changed)).not.toBe(Template.migrationsHash())
    expect(Template.file(templateDir, changed)).not.toBe(templateFile)
    expect(path.basename(templateFile)).toMatch(/^state-embedded-pglite-\d+\.\d+\.\d+-[0-9a-f]{16}\.template$/)
  })
})

describe("writing a template", () => {
  it("prunes the directory: other builds' templates but the two written last, and temporary files a dead writer left", async () => {
    const cache = fs.mkdtempSync(path.join(dir, "prune-"))
    const own = Template.file(cache)
    const now = Date.now()
    const at = (name: string, minutesAgo: number) => {
      fs.writeFileSync(path.join(cache, name), "x")
      const t = new Date(now - minutesAgo * 60_000)
      fs.utimesSync(path.join(cache, name), t, t)
      return name
    }
    const others = [40, 30, 20, 10].map((ago, i) => at(`state-embedded-pglite-0.0.${i}-${String(i).repeat(16)}.template`, ago))
    const oldTmp = at(`${path.basename(own)}.1234.abc123.tmp`, 61)
    const freshTmp = at(`${path.basename(own)}.1235.def456.tmp`, 5)
    const unrelated = at("notes.txt", 500)
    const mark = logs.length
    await Effect.runPromise(Template.write(own, new Uint8Array([1, 2, 3])).pipe(Effect.provide(capture)))
    expect(fs.readdirSync(cache).sort()).toEqual([path.basename(own), others[2], others[3], freshTmp, unrelated].sort())
    expect(since(mark)).toContain(`removed ${path.join(cache, others[0]!)} (another build's template`)
    expect(since(mark)).toContain(`removed ${path.join(cache, oldTmp)} (a temporary file a writer left)`)
    // Its own file is never pruned, nor is a directory of that name's shape.
    fs.mkdirSync(path.join(cache, "state-embedded-pglite-9.9.9-ffffffffffffffff.template"))
    await Effect.runPromise(Template.prune(own, now))
    expect(fs.existsSync(own)).toBe(true)
    expect(fs.statSync(path.join(cache, "state-embedded-pglite-9.9.9-ffffffffffffffff.template")).isDirectory()).toBe(true)
    expect(Template.KEPT_OTHERS).toBe(2)
  })
})
