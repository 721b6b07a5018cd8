// `npm run bench`: runs every benchmark next to its baseline in the same run and prints the
// table (p50 / p99, ratio, target). Also writes it to bench/results/latest.md and, with
// --write-docs, into docs/benchmarks.md between the bench:results markers.
//
//   npm run bench                         default sizes (~10 min on 2 shared cores)
//   npm run bench -- --full               the full sizes of DESIGN.md's targets
//   npm run bench -- --only=api,logs      some benchmarks: latency, api, scheduler, logs, stacks, ssh, services, slurm
//   npm run bench -- --postgres           state in PostgreSQL (test/support/postgres.ts finds or starts one;
//                                         --write-docs then fills the page's PostgreSQL table);
//                                         DSTACK_DATABASE_URL=postgres://… uses that server instead
//   BENCH_SERVER_CPU_PROF=/tmp/prof       every server process writes a .cpuprofile there
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { dockerUnavailableReason, ensureBusyboxImage } from "../test/support/docker.ts"
import { createTestDatabase, findPostgres, type TestDatabase } from "../test/support/postgres.ts"
import type { BenchContext } from "./context.ts"
import { machineHeader, markdownTable, type Row } from "./support/stats.ts"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const args = process.argv.slice(2)
const flag = (name: string) => args.includes(`--${name}`)
const option = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)

const ALL = ["latency", "api", "scheduler", "logs", "stacks", "ssh", "services", "slurm"] as const
type Name = (typeof ALL)[number]
const only = (option("only")?.split(",") ?? [...ALL]) as Array<Name>
for (const n of only) if (!ALL.includes(n)) throw new Error(`unknown benchmark ${n}; pick from ${ALL.join(", ")}`)

const full = flag("full") || process.env.BENCH_FULL === "1"

let database: TestDatabase | undefined
let databaseUrl = process.env.DSTACK_DATABASE_URL || undefined
let stateBackend = "embedded (PGlite, on disk in a temp directory)"
if (databaseUrl) stateBackend = `PostgreSQL (DSTACK_DATABASE_URL)`
else if (flag("postgres")) {
  const pg = await findPostgres()
  if (!pg.available) throw new Error(`--postgres: ${pg.reason}`)
  database = await createTestDatabase(pg.url, "dstack_bench")
  databaseUrl = database.url
  stateBackend = `PostgreSQL (${new URL(pg.url).host}, fresh database per server)`
}

const dockerMissing = await dockerUnavailableReason()
if (dockerMissing === undefined) await ensureBusyboxImage()

const started = Date.now()
const log = (line: string) => console.error(`[bench +${((Date.now() - started) / 1000).toFixed(0)}s] ${line}`)
const ctx: BenchContext = { full, databaseUrl, dockerMissing, log }

const rows: Array<Row> = []
const modules: Record<Name, () => Promise<{ run: (ctx: BenchContext) => Promise<Array<Row>> }>> = {
  latency: () => import("./latency.ts"),
  api: () => import("./api.ts"),
  scheduler: () => import("./scheduler.ts"),
  logs: () => import("./logs.ts"),
  stacks: () => import("./stacks.ts"),
  ssh: () => import("./ssh.ts"),
  services: () => import("./services.ts"),
  slurm: () => import("./slurm.ts")
}
try {
  for (const name of only) {
    log(`${name} …`)
    try {
      rows.push(...(await (await modules[name]()).run(ctx)))
    } catch (error) {
      log(`${name} failed: ${(error as Error).stack ?? error}`)
      rows.push({ section: name, measure: "(whole benchmark)", unit: "", better: "lower", notMeasured: `failed: ${String((error as Error).message ?? error).split("\n")[0]!.slice(0, 200)}` })
    }
  }
} finally {
  await database?.drop()
}

const report = [
  `Sizes: ${full ? "full" : "default"}; benchmarks: ${only.join(", ")}; took ${((Date.now() - started) / 1000).toFixed(0)} s.`,
  "",
  machineHeader(stateBackend),
  "",
  markdownTable(rows),
  ""
].join("\n")
console.log(report)
fs.mkdirSync(path.join(root, "bench", "results"), { recursive: true })
fs.writeFileSync(path.join(root, "bench", "results", "latest.md"), report)
if (flag("write-docs")) {
  const docs = path.join(root, "docs", "benchmarks.md")
  const text = fs.readFileSync(docs, "utf8")
  // The embedded default and PostgreSQL each have their own place in the page.
  const which = databaseUrl === undefined ? "results" : "results-postgres"
  const start = `<!-- bench:${which}:start -->`
  const end = `<!-- bench:${which}:end -->`
  const a = text.indexOf(start)
  const b = text.indexOf(end)
  if (a < 0 || b < a) throw new Error(`docs/benchmarks.md has no ${start} … ${end} markers`)
  fs.writeFileSync(docs, `${text.slice(0, a + start.length)}\n${report}\n${text.slice(b)}`)
  log("wrote docs/benchmarks.md")
}
