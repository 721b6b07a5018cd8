// Row 3: the scheduler.
// (a) Real jobs end to end: N `true` jobs submitted at once through the local backend with
//     max_instances = c (jobs wait for a free instance), jobs/s from the first submit until
//     every run is done, at c = 2, 4, 8; beside `xargs -P c` running the same N commands.
//       BENCH_SCHED_JOBS jobs per concurrency (default 32; full 100)
// (b) Placements: Q submitted runs stored before the server starts (as if submitted while it
//     was down), the no-op backend (bench/support/noop-plugin.ts: instances that start nothing,
//     runners answered in process, jobs that keep running): placements/s = jobs handed to an
//     instance per second, from the first to the last; also when the last one ran.
//       BENCH_SCHED_QUEUED queued runs (default 500; full 10,000)
// (c) Quiet jobs: the server's CPU while it follows N running jobs that print nothing (`sleep`,
//     each on its own local instance and runner), against the same server idle just before
//     they were submitted: what following a job costs the server while the job is quiet.
//       BENCH_SCHED_QUIET quiet jobs (default 8; full 32)
// BENCH_SCHED_PARTS=jobs, =placements or =quiet (comma-separated) runs only those parts (default all).
import { execFile } from "node:child_process"
import { apply, call, FINISHED } from "./support/api.ts"
import { startServer, type BenchServer } from "./support/server.ts"
import { now, sleep, type Row } from "./support/stats.ts"
import type { BenchContext } from "./context.ts"

const xargs = (n: number, c: number): Promise<number> =>
  new Promise((resolve, reject) => {
    const t0 = now()
    execFile("bash", ["-c", `seq ${n} | xargs -P ${c} -I{} bash -c true`], (error) => (error ? reject(error) : resolve(now() - t0)))
  })

const cpuMs = async (server: BenchServer): Promise<number> => {
  const res = await fetch(`${server.url}/bench/cpu`)
  const { userMs, systemMs } = (await res.json()) as { userMs: number; systemMs: number }
  return userMs + systemMs
}

/** Runs `f` over `items` with at most `limit` at once. */
const pool = async <A>(items: ReadonlyArray<A>, limit: number, f: (a: A) => Promise<void>) => {
  let next = 0
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await f(items[next++]!)
  }))
}

const realJobs = async (ctx: BenchContext, n: number, c: number): Promise<Row> => {
  const server = await startServer({ maxInstances: c, databaseUrl: ctx.databaseUrl })
  try {
    // one warm-up job: the runner bundle is built on the first instance
    await apply(server, "sched-warm", ["true"])
    const warmDeadline = now() + 120_000
    while (now() < warmDeadline && !FINISHED.includes((await call(server, "/api/project/main/runs/get", { run_name: "sched-warm" })).body.status)) await sleep(100)
    ctx.log(`scheduler: c=${c}, ${n} jobs submitted at once`)
    const names = Array.from({ length: n }, (_, i) => `sched-${c}-${i}`)
    const cpu0 = await cpuMs(server)
    const t0 = now()
    let submitMs = 0
    // "At once": every submission in flight together (8 connections), none waits for a run.
    const submitted = pool(names, 8, async (name) => {
      const ts = now()
      await apply(server, name, ["true"])
      submitMs += now() - ts
    })
    const statuses = new Map<string, string>()
    let why = ""
    const deadline = now() + 600_000
    while (statuses.size < n) {
      await sleep(50)
      const list = await call(server, "/api/runs/list", { project_name: "main", only_active: false, limit: Math.min(1000, n + 1) })
      for (const r of list.body as Array<any>) {
        const name = r.run_spec.run_name
        if (!name.startsWith(`sched-${c}-`) || statuses.has(name) || !FINISHED.includes(r.status)) continue
        statuses.set(name, r.status)
        const sub = r.jobs?.[0]?.job_submissions?.at(-1)
        if (r.status !== "done" && sub) why = `${sub.termination_reason}: ${String(sub.termination_reason_message ?? "").slice(0, 160)}`
      }
      if (now() > deadline) throw new Error(`scheduler c=${c}: not finished in time (${statuses.size} of ${n})`)
    }
    await submitted
    const ms = now() - t0
    const cpu = (await cpuMs(server)) - cpu0
    const failed = [...statuses.values()].filter((s) => s !== "done").length
    const base = await xargs(n, c)
    const rate = n / (ms / 1000)
    ctx.log(`scheduler: c=${c}: ${rate.toFixed(1)} jobs/s (submit calls ${(submitMs / n).toFixed(0)} ms each; server CPU ${(cpu / n).toFixed(1)} ms/job), xargs ${(n / (base / 1000)).toFixed(0)} jobs/s`)
    return {
      section: "3 scheduler",
      measure: `${n} \`true\` jobs end to end, max_instances=${c}`,
      unit: "jobs/s",
      value: rate,
      baseline: n / (base / 1000),
      better: "higher",
      target: "≥ 50 jobs/s",
      verdict: rate >= 50 ? "meets" : "short",
      note: `vs \`xargs -P ${c}\`; all submitted at once; submit calls ${(submitMs / n).toFixed(0)} ms each; server CPU ${(cpu / n).toFixed(1)} ms/job${failed ? `; **${failed} of ${n} not done** (${why})` : ""}`
    }
  } finally {
    await server.stop()
  }
}

interface NoopStats {
  readonly submits: ReadonlyArray<number>
  readonly runs: ReadonlyArray<number>
  readonly instances: number
  readonly startedAt: number
  readonly listeningAt: number
}

const placements = async (ctx: BenchContext, queued: number): Promise<Row> => {
  ctx.log(`scheduler: placements, ${queued} queued runs, no-op backend`)
  const server = await startServer({ backend: "noop", noop: { job_seconds: -1 }, queuedRuns: queued, databaseUrl: ctx.databaseUrl })
  try {
    const deadline = now() + 600_000
    let stats: NoopStats
    let last = -1
    let stalledSince = now()
    for (;;) {
      stats = (await (await fetch(`${server.url}/bench/noop-stats`)).json()) as NoopStats
      if (stats.runs.length >= queued) break
      if (stats.runs.length !== last) {
        last = stats.runs.length
        stalledSince = now()
      }
      if (now() > deadline || now() - stalledSince > 60_000) {
        throw new Error(`placements: ${stats.submits.length} handed over, ${stats.runs.length} running of ${queued} (stalled or out of time)`)
      }
      await sleep(250)
    }
    const cpu = await cpuMs(server)
    const first = Math.min(...stats.submits)
    const lastSubmit = Math.max(...stats.submits)
    const lastRun = Math.max(...stats.runs)
    const rate = (stats.submits.length - 1) / Math.max(0.001, (lastSubmit - first) / 1000)
    const note = `first placement ${((first - stats.listeningAt) / 1000).toFixed(1)} s after the server listened (it started ${((stats.listeningAt - stats.startedAt) / 1000).toFixed(1)} s before that); all ${queued} running ${((lastRun - stats.listeningAt) / 1000).toFixed(1)} s after it listened; ${stats.instances} instances; server CPU ${(cpu / queued).toFixed(2)} ms per job incl. start-up`
    ctx.log(`scheduler: placements: ${rate.toFixed(0)}/s; ${note}`)
    return {
      section: "3 scheduler",
      measure: `placements/s with ${queued.toLocaleString("en-US")} queued no-op jobs (stored before the server starts)`,
      unit: "placements/s",
      value: rate,
      better: "higher",
      target: "≥ 1,000 placements/s",
      verdict: rate >= 1000 ? "meets" : "short",
      note
    }
  } finally {
    await server.stop()
  }
}

/** The server's CPU over a window, in ms per second. */
const cpuRate = async (server: BenchServer, windowMs: number): Promise<number> => {
  const cpu0 = await cpuMs(server)
  const t0 = now()
  await sleep(windowMs)
  return ((await cpuMs(server)) - cpu0) / ((now() - t0) / 1000)
}

const QUIET_WINDOW_MS = 20_000

const quietJobs = async (ctx: BenchContext, n: number): Promise<Row> => {
  const server = await startServer({ maxInstances: n, databaseUrl: ctx.databaseUrl })
  const names = Array.from({ length: n }, (_, i) => `quiet-${i}`)
  try {
    // One job first (the runner bundle is built on the first instance), then a quiet server.
    await apply(server, "quiet-warm", ["true"])
    const warmDeadline = now() + 120_000
    while (now() < warmDeadline && !FINISHED.includes((await call(server, "/api/project/main/runs/get", { run_name: "quiet-warm" })).body.status)) await sleep(100)
    await sleep(3_000)
    const idle = await cpuRate(server, QUIET_WINDOW_MS)
    for (const name of names) await apply(server, name, ["sleep 3600"])
    const deadline = now() + 300_000
    for (;;) {
      const list = await call(server, "/api/runs/list", { project_name: "main", only_active: true, limit: n + 1 })
      const running = (list.body as Array<any>).filter((r) => r.run_spec.run_name.startsWith("quiet-") && r.status === "running").length
      if (running === n) break
      if (now() > deadline) throw new Error(`quiet jobs: ${running} of ${n} running after 300 s`)
      await sleep(250)
    }
    // Past the start of each job (its hand-over, first events, acknowledgment).
    await sleep(5_000)
    const busy = await cpuRate(server, QUIET_WINDOW_MS)
    const perJob = (busy - idle) / n
    ctx.log(`scheduler: ${n} quiet jobs: server CPU ${busy.toFixed(1)} ms/s, idle ${idle.toFixed(1)} ms/s: ${perJob.toFixed(2)} ms/s per job`)
    return {
      section: "3 scheduler",
      measure: `server CPU following ${n} running jobs that print nothing (\`sleep\`), vs the same server idle`,
      unit: "ms CPU/s",
      value: busy,
      baseline: idle,
      better: "lower",
      verdict: "n/a",
      note: `${perJob.toFixed(2)} ms/s per followed job; ${QUIET_WINDOW_MS / 1000} s windows, the jobs past their start by 5 s`
    }
  } finally {
    await call(server, "/api/project/main/runs/stop", { runs_names: names, abort: true }).catch(() => undefined)
    await server.stop()
  }
}

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const n = Number(process.env.BENCH_SCHED_JOBS ?? (ctx.full ? 100 : 32))
  const queued = Number(process.env.BENCH_SCHED_QUEUED ?? (ctx.full ? 10_000 : 500))
  const quiet = Number(process.env.BENCH_SCHED_QUIET ?? (ctx.full ? 32 : 8))
  const parts = (process.env.BENCH_SCHED_PARTS ?? "jobs,placements,quiet").split(",")
  const rows: Array<Row> = []
  if (parts.includes("jobs")) for (const c of [2, 4, 8]) rows.push(await realJobs(ctx, n, c))
  if (parts.includes("placements")) rows.push(await placements(ctx, queued))
  if (parts.includes("quiet")) rows.push(await quietJobs(ctx, quiet))
  return rows
}
