// Finds a PostgreSQL server for the tests and makes throwaway databases on it. Uses
// DSTACK_TEST_DATABASE_URL when set (CI sets it from .ci/postgres.sh); else the cluster that
// .ci/postgres.sh runs locally (127.0.0.1:54329), starting it when PostgreSQL is installed.
// That cluster is left running for the next test files: `bash .ci/postgres.sh --stop` stops it.
// Suites wrap themselves in `describeWith("postgresql", pg.available, pg.reason, …)` from
// ./components.ts: skipped loudly on a laptop without PostgreSQL, a failure under CI=true.
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export interface PostgresAvailability {
  readonly available: boolean
  /** Why it is not available (empty when it is). */
  readonly reason: string
  /** A URL of the server's maintenance database (`postgres`), when available. */
  readonly url: string
}

/** The URL .ci/postgres.sh prints with its default directory and port. */
export const LOCAL_URL = "postgres://postgres@127.0.0.1:54329/postgres"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

const run = (file: string, args: ReadonlyArray<string>, timeoutMs = 60_000): Promise<{ ok: boolean; out: string }> =>
  new Promise((resolve) => {
    execFile(file, [...args], { timeout: timeoutMs, cwd: root }, (error, stdout, stderr) => {
      resolve({ ok: error === null, out: `${stdout}${stderr}`.trim() })
    })
  })

const psql = (url: string, sql: string) => run("psql", [url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql], 30_000)

const hasPsql = async (): Promise<boolean> => (await run("psql", ["--version"], 10_000)).ok

const installed = (): boolean => {
  try {
    return fs.readdirSync("/usr/lib/postgresql").some((v) => fs.existsSync(`/usr/lib/postgresql/${v}/bin/postgres`))
  } catch {
    return false
  }
}

let found: Promise<PostgresAvailability> | undefined

/** Finds (or starts) a server once per test process. */
export const findPostgres = (): Promise<PostgresAvailability> => (found ??= locate())

const locate = async (): Promise<PostgresAvailability> => {
  const fromEnv = process.env.DSTACK_TEST_DATABASE_URL
  if (!(await hasPsql())) {
    return { available: false, reason: "psql (the PostgreSQL client) is not installed: run `bash .ci/postgres.sh`", url: "" }
  }
  if (fromEnv !== undefined && fromEnv !== "") {
    const probe = await psql(fromEnv, "SELECT 1")
    return probe.ok
      ? { available: true, reason: "", url: fromEnv }
      : { available: false, reason: `DSTACK_TEST_DATABASE_URL=${fromEnv} does not answer: ${probe.out}`, url: "" }
  }
  if ((await psql(LOCAL_URL, "SELECT 1")).ok) return { available: true, reason: "", url: LOCAL_URL }
  if (!installed()) {
    return {
      available: false,
      reason: "PostgreSQL is not installed and DSTACK_TEST_DATABASE_URL is not set: run `bash .ci/postgres.sh`",
      url: ""
    }
  }
  const started = await run("bash", [path.join(root, ".ci/postgres.sh"), "--no-install"], 120_000)
  const url = started.out.split("\n").pop() ?? ""
  if (!started.ok || !(await psql(url, "SELECT 1")).ok) {
    return { available: false, reason: `could not start a local PostgreSQL with .ci/postgres.sh: ${started.out}`, url: "" }
  }
  console.warn(`\n(started a throwaway PostgreSQL at ${url}; stop it with: bash .ci/postgres.sh --stop)\n`)
  return { available: true, reason: "", url }
}

/** The URL of another database on the same server. */
export const databaseUrl = (serverUrl: string, database: string): string => {
  const u = new URL(serverUrl)
  u.pathname = `/${database}`
  return u.toString()
}

export interface TestDatabase {
  readonly name: string
  readonly url: string
  /** Drops the database, closing whatever connections are still open on it. */
  readonly drop: () => Promise<void>
}

/** Creates a fresh, empty database on the server (named `<prefix>_<random>`). */
export const createTestDatabase = async (serverUrl: string, prefix = "dstack_test"): Promise<TestDatabase> => {
  const name = `${prefix}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e9).toString(36)}`.toLowerCase()
  const created = await psql(serverUrl, `CREATE DATABASE "${name}"`)
  if (!created.ok) throw new Error(`could not create test database ${name}: ${created.out}`)
  return {
    name,
    url: databaseUrl(serverUrl, name),
    drop: async () => {
      await psql(serverUrl, `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
    }
  }
}

/** Runs SQL on a database through psql and returns the output lines (`-At`: unaligned, tuples only). */
export const psqlLines = async (url: string, sql: string): Promise<Array<string>> => {
  const r = await psql(url, sql)
  if (!r.ok) throw new Error(`psql failed: ${r.out}`)
  return r.out === "" ? [] : r.out.split("\n")
}

/** Where .ci/postgres.sh runs the TLS cluster for the tests (`DSTACK_PG_TLS=1`). */
const TLS_DIR = "/tmp/dstack-ts-pg-tls"
const TLS_PORT = 54339

let foundTls: Promise<PostgresAvailability> | undefined

/**
 * A PostgreSQL server that accepts TLS (a self-signed certificate for 127.0.0.1; plain
 * connections too): a cluster of its own that .ci/postgres.sh starts (`DSTACK_PG_TLS=1`, under
 * /tmp/dstack-ts-pg-tls on port 54339) from the installed PostgreSQL, left running like the
 * other one (`DSTACK_PG_DIR=/tmp/dstack-ts-pg-tls DSTACK_PG_PORT=54339 bash .ci/postgres.sh --stop`).
 * `url` is its maintenance database, without sslmode.
 */
export const findTlsPostgres = (): Promise<PostgresAvailability> => (foundTls ??= locateTls())

const locateTls = async (): Promise<PostgresAvailability> => {
  const url = `postgres://postgres@127.0.0.1:${TLS_PORT}/postgres`
  if (!(await hasPsql())) return { available: false, reason: "psql (the PostgreSQL client) is not installed: run `bash .ci/postgres.sh`", url: "" }
  if ((await psql(`${url}?sslmode=require`, "SELECT 1")).ok) return { available: true, reason: "", url }
  if (!installed()) return { available: false, reason: "PostgreSQL is not installed here (a TLS cluster of its own is needed): run `bash .ci/postgres.sh`", url: "" }
  const started = await new Promise<{ ok: boolean; out: string }>((resolve) => {
    execFile("bash", [path.join(root, ".ci/postgres.sh"), "--no-install"], {
      timeout: 120_000,
      cwd: root,
      env: { ...process.env, DSTACK_PG_DIR: TLS_DIR, DSTACK_PG_PORT: String(TLS_PORT), DSTACK_PG_TLS: "1" }
    }, (error, stdout, stderr) => resolve({ ok: error === null, out: `${stdout}${stderr}`.trim() }))
  })
  const probe = await psql(`${url}?sslmode=require`, "SELECT 1")
  if (!started.ok || !probe.ok) {
    return { available: false, reason: `could not start a PostgreSQL with TLS with .ci/postgres.sh: ${started.out} ${probe.out}`, url: "" }
  }
  return { available: true, reason: "", url }
}
