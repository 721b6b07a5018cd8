// A/B of the PostgreSQL store's JSON encoding (migration 9) on one run document of a realistic
// size, in turns on one database so that the machine's load falls on both arms alike:
//   old: the statements before migration 9 (`$n::jsonb` with JSON text: the `postgres` driver
//        stores a JSON string of the text; migration 8's `runs.submission_ids` parses it again;
//        a read parses twice), in a schema migrated to 8;
//   new: this checkout's statements (`$n::text::jsonb`, one parse), in a schema migrated to 9.
// Each arm updates the document (as the engine does on every state change) and reads it back
// (`SELECT *`); prints per operation the wall time and the CPU of this process and of the
// arm's PostgreSQL backend (median of the turns).
//   npx tsx bench/support/ab-json.ts [turns=10] [ops per turn=200]
import * as fs from "node:fs"
import { isDeepStrictEqual } from "node:util"
import postgres from "postgres"
import { Effect } from "effect"
import { StateMigrations } from "@dstack-ts/core"
import { PostgresStateStore } from "@dstack-ts/state-postgres"
import { createTestDatabase, findPostgres } from "../../test/support/postgres.ts"

const turns = Number(process.argv[2] ?? 10)
const ops = Number(process.argv[3] ?? 200)
const pg = await findPostgres()
if (!pg.available) throw new Error(pg.reason)
const db = await createTestDatabase(pg.url, "ab_json")

const backendCpuMs = (pid: number): number => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100
}
const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

// A run of 4 jobs with 3 submissions each, its specs, env and commands: ~7 KiB of JSON.
const runDoc = (n: number) => ({
  run: {
    id: "run-ab", status: "running", project_name: "main", user: "admin", submitted_at: new Date().toISOString(), turn: n,
    run_spec: {
      run_name: "ab", configuration: { type: "task", commands: ["pip install -r requirements.txt", "python train.py --epochs 10"], env: { A: "1", "B\"q": "ü" }, resources: { gpu: "24GB..", cpu: "4..", memory: "16GB.." } },
      repo_data: { repo_type: "remote", repo_name: "repo", repo_branch: "main", repo_hash: "0123456789abcdef0123456789abcdef01234567" }
    },
    jobs: Array.from({ length: 4 }, (_, j) => ({
      job_spec: { job_name: `ab-0-${j}`, replica_num: 0, job_num: j, commands: ["/bin/sh", "-c", "python train.py --epochs 10 --rank " + j], env: Object.fromEntries(Array.from({ length: 12 }, (_, k) => [`ENV_${k}`, `value-${k}-${"x".repeat(16)}`])), working_dir: "/workflow", image_name: "dstackai/base:py3.12-0.7-cuda-12.1" },
      job_submissions: Array.from({ length: 3 }, (_, s) => ({
        id: `sub-${j}-${s}-0123456789abcdef`, submission_num: s, status: s === 2 ? "running" : "failed", submitted_at: new Date().toISOString(),
        job_provisioning_data: { backend: "local", instance_type: { name: "local", resources: { cpus: 4, memory_mib: 16384, gpus: [], spot: false, disk: { size_mib: 102400 } } }, instance_id: `i-${j}-${s}`, hostname: "127.0.0.1", region: "local", price: 0, username: "root", ssh_port: 22, dockerized: true },
        exit_status: s === 2 ? null : 1, termination_reason: s === 2 ? null : "container_exited_with_error"
      }))
    }))
  },
  submitted_to_runner: []
})

interface Arm {
  readonly name: string
  readonly sql: postgres.Sql
  readonly pid: number
  readonly update: (doc: unknown) => Promise<unknown>
  readonly get: () => Promise<unknown>
}

const armOn = async (name: "old" | "new"): Promise<Arm> => {
  const admin = postgres(db.url, { max: 1, onnotice: () => {} })
  await admin.unsafe(`CREATE SCHEMA ${name}`)
  await admin.end()
  const sql = postgres(db.url, { max: 1, onnotice: () => {}, connection: { search_path: name } })
  const driver = PostgresStateStore.makeDriver(sql as never)
  await Effect.runPromise(StateMigrations.migrate(driver, StateMigrations.migrations.filter((m) => m.version <= (name === "old" ? 8 : 9))))
  const cast = name === "old" ? "::jsonb" : "::text::jsonb"
  const read = (v: unknown) => (name === "old" && typeof v === "string" ? JSON.parse(v) : v)
  await sql.unsafe(`INSERT INTO runs (id, project, name, status, doc) VALUES ('run-ab', 'main', 'ab', 'running', $1${cast})`, [JSON.stringify(runDoc(0))])
  const [{ pid }] = await sql.unsafe(`SELECT pg_backend_pid() AS pid`)
  return {
    name,
    sql,
    pid: Number(pid),
    update: async (doc) => {
      const rows = await sql.unsafe(
        `UPDATE runs SET version = version + 1, doc = $2${cast}, updated_at = clock_timestamp() WHERE id = $1 RETURNING *`,
        ["run-ab", JSON.stringify(doc)]
      )
      return read(rows[0]!.doc)
    },
    get: async () => read((await sql.unsafe(`SELECT * FROM runs WHERE id = $1`, ["run-ab"]))[0]!.doc)
  }
}

const arms = [await armOn("old"), await armOn("new")]
try {
  // Both store the same document (jsonb gives the keys back in an order of its own) and find
  // it by a submission id.
  for (const a of arms) {
    const doc = runDoc(1)
    if (!isDeepStrictEqual(await a.update(doc), doc)) throw new Error(`${a.name}: the document did not round-trip`)
    const [{ n }] = await a.sql.unsafe(`SELECT count(*)::int AS n FROM runs WHERE submission_ids @> '["sub-3-2-0123456789abcdef"]'`)
    if (n !== 1) throw new Error(`${a.name}: not found by submission id`)
  }
  console.log(`document: ${JSON.stringify(runDoc(0)).length} bytes of JSON; ${turns} turns of ${ops} updates then ${ops} reads per arm; load ${fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`)
  const results: Record<string, Record<string, Array<number>>> = {}
  for (let t = 0; t < turns; t++) {
    for (const a of t % 2 === 0 ? arms : [...arms].reverse()) {
      for (const op of ["update", "get"] as const) {
        const docs = Array.from({ length: ops }, (_, i) => runDoc(t * ops + i))
        const cpu0 = process.cpuUsage()
        const db0 = backendCpuMs(a.pid)
        const t0 = performance.now()
        for (let i = 0; i < ops; i++) await (op === "update" ? a.update(docs[i]) : a.get())
        const wall = ((performance.now() - t0) * 1000) / ops
        const cpu = process.cpuUsage(cpu0)
        const r = ((results[a.name] ??= {})[op] ??= [])
        r.push(wall)
        ;(results[a.name]![`${op} client cpu`] ??= []).push((cpu.user + cpu.system) / ops)
        ;(results[a.name]![`${op} db cpu`] ??= []).push(((backendCpuMs(a.pid) - db0) * 1000) / ops)
      }
    }
  }
  for (const op of ["update", "get"]) {
    const line = (a: string) =>
      `${median(results[a]![op]!).toFixed(0)} µs wall, client CPU ${median(results[a]![`${op} client cpu`]!).toFixed(0)} µs, PostgreSQL CPU ${median(results[a]![`${op} db cpu`]!).toFixed(0)} µs`
    console.log(`${op}: old ${line("old")}; new ${line("new")}`)
  }
  console.log(`load after: ${fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`)
} finally {
  await Promise.all(arms.map((a) => a.sql.end()))
  await db.drop()
}
