// Row 2: the API under load over a real loopback port — requests/s and latency p50/p99 of
// runs/get, runs/list (a page of 100 and of 1,000 out of N stored runs) and runs/get_plan at
// concurrency 1, 16 and 64, beside a bare node:http server answering the same JSON bytes.
//   BENCH_API_RUNS   stored runs, inserted through the StateStore (default 2,000; full 10,000)
//   BENCH_API_SECONDS measuring time per point (default 2; full 5), after a 0.3 s warm-up
//   BENCH_API_ROUTES  some of get, list, listcold, list1000, plan (default all)
//   BENCH_API_WARMUP_S seconds both servers answer the routes before the first point (default 1)
import * as fs from "node:fs"
import { startBare, startServer } from "./support/server.ts"
import { load, type Target } from "./support/load.ts"
import { runSpec } from "./support/api.ts"
import { summarize, type Row } from "./support/stats.ts"
import type { BenchContext } from "./context.ts"

const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1))

/**
 * CPU time a process has used so far, ms (user + system, from /proc; NaN elsewhere). Divided by
 * the requests it answered, it says what one request costs the server, a figure the other
 * work on a shared machine moves far less than requests/s.
 */
const cpuMs = (pid: number): number => {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
  } catch {
    return Number.NaN
  }
}

/** Runs the load and answers it with the server's CPU µs per request. */
const measured = async (pid: number, run: () => Promise<Awaited<ReturnType<typeof load>>>) => {
  const before = cpuMs(pid)
  const result = await run()
  return { ...result, cpuUsPerRequest: ((cpuMs(pid) - before) * 1000) / Math.max(1, result.requests + result.warmupRequests) }
}

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const n = Number(process.env.BENCH_API_RUNS ?? (ctx.full ? 10_000 : 2_000))
  const seconds = Number(process.env.BENCH_API_SECONDS ?? (ctx.full ? 5 : 2))
  const concurrencies = [1, 16, 64]
  ctx.log(`api: starting a server with ${n} stored runs`)
  const t0 = Date.now()
  const server = await startServer({ prefillRuns: n, databaseUrl: ctx.databaseUrl })
  ctx.log(`api: server up with ${n} runs in ${((Date.now() - t0) / 1000).toFixed(0)} s`)
  const only = process.env.BENCH_API_ROUTES?.split(",").map((s) => s.trim())
  const routes: Array<{ key: string; label: string; path: string; body: unknown; bodyAt?: (i: number) => string }> = [
    { key: "get", label: "runs/get", path: "/api/project/main/runs/get", body: { run_name: `prefill-${Math.floor(n / 2)}` } },
    { key: "list", label: `runs/list (page of 100 of ${n.toLocaleString("en-US")})`, path: "/api/runs/list", body: { project_name: "main" } },
    // The same first page, but each request with another cursor past every run (so the same
    // rows): never answered from the server's memory of pages, as after a run changed.
    { key: "listcold", label: `runs/list (page of 100 of ${n.toLocaleString("en-US")}, a new cursor each request)`, path: "/api/runs/list?cold", body: { project_name: "main" }, bodyAt: (i: number) => JSON.stringify({ project_name: "main", prev_submitted_at: new Date(Date.parse("2100-01-01T00:00:00Z") + i).toISOString() }) },
    { key: "list1000", label: `runs/list (page of 1,000 of ${n.toLocaleString("en-US")})`, path: "/api/runs/list?limit=1000", body: { project_name: "main", limit: 1000 } },
    { key: "plan", label: "runs/get_plan", path: "/api/project/main/runs/get_plan", body: runSpec("plan-me", ["true"]) }
  ].filter((r) => only === undefined || only.includes(r.key))
  const rows: Array<Row> = []
  let bare: Awaited<ReturnType<typeof startBare>> | undefined
  try {
    // the bare server answers each path with the bytes the real one gave
    const bodies: Record<string, string> = {}
    for (const r of routes) {
      const res = await fetch(`${server.url}${r.path}`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${server.token}` }, body: JSON.stringify(r.body) })
      const text = await res.text()
      if (res.status !== 200) throw new Error(`${r.label}: HTTP ${res.status} ${text.slice(0, 300)}`)
      bodies[r.path] = text
    }
    bare = await startBare(bodies)
    const barePid = bare.pid
    // Both servers answer every route for a while before the first point: the first point would
    // otherwise measure the JIT compiling the server's request path (worth ~50 µs of CPU per
    // request at c=1 on a server just started) rather than the steady state the target is about.
    const warmup = Number(process.env.BENCH_API_WARMUP_S ?? 1) * 1000
    if (warmup > 0) {
      for (const r of routes) {
        const target: Target = { url: server.url, path: r.path, body: JSON.stringify(r.body), token: server.token }
        await load(target, { concurrency: 4, durationMs: warmup / routes.length, maxRequests: 200_000, warmupMs: 0 })
        await load({ ...target, url: bare.url }, { concurrency: 4, durationMs: warmup / routes.length, maxRequests: 200_000, warmupMs: 0 })
      }
    }
    for (const r of routes) {
      // a page of 1,000 takes about half a second here: only at c=1 unless full
      for (const c of r.label.includes("1,000 of") && !ctx.full ? [1] : concurrencies) {
        const opts = { concurrency: c, durationMs: seconds * 1000, maxRequests: 200_000 }
        const sysTarget: Target = { url: server.url, path: r.path, body: JSON.stringify(r.body), token: server.token, ...(r.bodyAt ? { bodyAt: r.bodyAt } : {}) }
        const sys = await measured(server.pid, () => load(sysTarget, opts))
        const bareUrl = bare.url
        const base = await measured(barePid, () => load({ ...sysTarget, url: bareUrl }, opts))
        const sl = summarize(sys.latencies)
        const bl = summarize(base.latencies)
        ctx.log(`api: ${r.label} c=${c}: ${sys.rps.toFixed(0)} req/s (p50 ${sl.p50.toFixed(1)} p99 ${sl.p99.toFixed(1)} ms; ${sys.cpuUsPerRequest.toFixed(0)} µs CPU/req) vs bare ${base.rps.toFixed(0)} req/s (${base.cpuUsPerRequest.toFixed(0)} µs CPU/req)`)
        let target: string | undefined
        let verdict: Row["verdict"]
        if (r.label === "runs/get") {
          target = "≥ 50% of bare req/s"
          verdict = sys.rps >= 0.5 * base.rps ? "meets" : "short"
        } else if (r.label.startsWith("runs/list") && c === 1) {
          target = "p99 < 50 ms (10,000 runs; judged at c=1)"
          verdict = sl.p99 < 50 ? "meets" : "short"
        }
        rows.push({
          section: "2 API",
          measure: `${r.label}, c=${c}`,
          unit: "req/s",
          value: sys.rps,
          baseline: base.rps,
          better: "higher",
          ...(target ? { target } : {}),
          ...(verdict ? { verdict } : {}),
          note: `latency p50/p99 ${fmt(sl.p50)}/${fmt(sl.p99)} ms vs bare ${fmt(bl.p50)}/${fmt(bl.p99)} ms; server CPU ${fmt(sys.cpuUsPerRequest)} vs ${fmt(base.cpuUsPerRequest)} µs/req${sys.errors ? `; ${sys.errors} errors` : ""}; ${(bodies[r.path]!.length / 1024).toFixed(0)} KiB body`
        })
      }
    }
  } finally {
    await bare?.stop()
    await server.stop()
  }
  return rows
}
