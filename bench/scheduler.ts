// Row 3: scheduler throughput end to end — N small `true` jobs submitted at once through the
// local backend with max_instances = c, jobs/s from the first submit until every run is
// done, at c = 2, 4, 8; beside `xargs -P c` running the same N commands.
//   BENCH_SCHED_JOBS jobs per concurrency (default 16; full 100)
// Placements/s with 10,000 queued no-op jobs is not measured yet (see docs/benchmarks.md).
import { execFile } from "node:child_process"
import { apply, call, FINISHED } from "./support/api.ts"
import { startServer } from "./support/server.ts"
import { now, sleep, type Row } from "./support/stats.ts"
import type { BenchContext } from "./context.ts"

const xargs = (n: number, c: number): Promise<number> =>
  new Promise((resolve, reject) => {
    const t0 = now()
    execFile("bash", ["-c", `seq ${n} | xargs -P ${c} -I{} bash -c true`], (error) => (error ? reject(error) : resolve(now() - t0)))
  })

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const n = Number(process.env.BENCH_SCHED_JOBS ?? (ctx.full ? 100 : 16))
  const rows: Array<Row> = []
  for (const c of [2, 4, 8]) {
    const server = await startServer({ maxInstances: c, databaseUrl: ctx.databaseUrl })
    try {
      // one warm-up job: the runner bundle is built on the first instance
      await apply(server, "sched-warm", ["true"])
      const warmDeadline = now() + 120_000
      while (now() < warmDeadline && !FINISHED.includes((await call(server, "/api/project/main/runs/get", { run_name: "sched-warm" })).body.status)) await sleep(100)
      ctx.log(`scheduler: c=${c}, ${n} jobs`)
      // The engine fails a job that finds every instance busy (no_capacity) instead of queueing
      // it, so the client keeps c runs in flight and submits the next when one ends.
      const t0 = now()
      let next = 0
      let submitted = 0
      const inFlight = new Set<string>()
      const statuses: Array<string> = []
      let why = ""
      const deadline = now() + 600_000
      while (statuses.length < n) {
        while (inFlight.size < c && next < n) {
          const name = `sched-${c}-${next++}`
          const ts = now()
          await apply(server, name, ["true"])
          submitted += now() - ts
          inFlight.add(name)
        }
        await sleep(20)
        const list = await call(server, "/api/runs/list", { project_name: "main", only_active: false, limit: 100 })
        for (const r of list.body as Array<any>) {
          const name = r.run_spec.run_name
          if (!inFlight.has(name) || !FINISHED.includes(r.status)) continue
          inFlight.delete(name)
          statuses.push(r.status)
          const sub = r.jobs?.[0]?.job_submissions?.at(-1)
          if (r.status !== "done" && sub) why = `${sub.termination_reason}: ${String(sub.termination_reason_message ?? "").slice(0, 160)}`
        }
        if (now() > deadline) throw new Error(`scheduler c=${c}: not finished in time`)
      }
      const ms = now() - t0
      const failed = statuses.filter((s) => s !== "done").length
      const base = await xargs(n, c)
      const rate = n / (ms / 1000)
      ctx.log(`scheduler: c=${c}: ${rate.toFixed(1)} jobs/s (client keeps ${c} in flight; submit calls ${(submitted / n).toFixed(0)} ms each), xargs ${(n / (base / 1000)).toFixed(0)} jobs/s`)
      rows.push({
        section: "3 scheduler",
        measure: `${n} \`true\` jobs end to end, max_instances=${c}`,
        unit: "jobs/s",
        value: rate,
        baseline: n / (base / 1000),
        better: "higher",
        target: "≥ 50 jobs/s",
        verdict: rate >= 50 ? "meets" : "short",
        note: `vs \`xargs -P ${c}\`; client keeps ${c} in flight; submit calls ${(submitted / n).toFixed(0)} ms each${failed ? `; **${failed} of ${n} not done** (${why})` : ""}`
      })
    } finally {
      await server.stop()
    }
  }
  rows.push({
    section: "3 scheduler",
    measure: "placements/s with 10,000 queued no-op jobs",
    unit: "placements/s",
    better: "higher",
    target: "≥ 1,000 placements/s",
    notMeasured: "needs a no-op backend whose instances answer the runner API without processes; the in-process test backend starts a real runner per instance"
  })
  return rows
}
