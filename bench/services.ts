// Services: the proxy against calling the replica directly (requests/s and p50/p99 latency at a
// few concurrencies, closed loop, keep-alive), one process replica of test/support/service-app.mjs
// on the local backend. The server is its own process (./support/server.ts), as the replica is,
// so the load generator here is the same in both arms; the two arms take turns (three rounds
// each) so that a change in the machine's other load falls on both alike. The note gives the
// server's CPU per proxied request, a figure the rest of a shared machine moves far less.
import * as fs from "node:fs"
import { httpCall } from "../test/support/api.ts"
import { applyService, waitRunning } from "../test/support/services.ts"
import type { BenchContext } from "./context.ts"
import { load, type LoadResult, type Target } from "./support/load.ts"
import { startServer } from "./support/server.ts"
import { summarize, type Row } from "./support/stats.ts"

/** CPU time a process has used so far, ms (user + system, from /proc; NaN elsewhere). */
const cpuMs = (pid: number): number => {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
  } catch {
    return Number.NaN
  }
}

const ROUNDS = 3

/** Both arms in turns; each arm's results added up over its rounds. */
const inTurns = async (arms: ReadonlyArray<Target>, options: { concurrency: number; durationMs: number }, serverPid: number) => {
  const totals = arms.map(() => ({ requests: 0, errors: 0, seconds: 0, latencies: [] as Array<number>, serverCpuMs: 0, counted: 0 }))
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, target] of arms.entries()) {
      const before = cpuMs(serverPid)
      const r: LoadResult = await load(target, { concurrency: options.concurrency, durationMs: options.durationMs / ROUNDS, maxRequests: 200_000 })
      const t = totals[i]!
      t.serverCpuMs += cpuMs(serverPid) - before
      t.counted += r.requests + r.warmupRequests
      t.requests += r.requests
      t.errors += r.errors
      t.seconds += r.seconds
      for (const l of r.latencies) t.latencies.push(l)
    }
  }
  return totals.map((t) => ({ ...t, rps: t.requests / t.seconds, serverCpuUsPerRequest: (t.serverCpuMs * 1000) / Math.max(1, t.counted) }))
}

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const server = await startServer({ databaseUrl: ctx.databaseUrl })
  const call = httpCall(server.url, server.token)
  const rows: Array<Row> = []
  try {
    const port = await applyService(call, "bench-web", { auth: true })
    await waitRunning(call, "bench-web")
    // The replica answers once it listens.
    for (let i = 0; i < 100 && (await fetch(`http://127.0.0.1:${port}/path`).catch(() => undefined)) === undefined; i++) await new Promise((r) => setTimeout(r, 100))
    const durationMs = ctx.full ? 10_000 : 3_000
    const direct: Target = { url: `http://127.0.0.1:${port}`, path: "/path", body: "{}" }
    const proxied: Target = { url: server.url, path: "/proxy/services/main/bench-web/path", body: "{}", token: server.token }
    for (const concurrency of [1, 16]) {
      ctx.log(`services: c=${concurrency}`)
      const [d, p] = await inTurns([direct, proxied], { concurrency, durationMs }, server.pid)
      const ratio = p!.rps / d!.rps
      const errors = p!.errors + d!.errors > 0 ? `; ${p!.errors} proxy / ${d!.errors} direct errors` : ""
      rows.push({
        section: "services", measure: `proxy req/s, c=${concurrency} (vs the replica directly)`, unit: "req/s", better: "higher",
        value: p!.rps, baseline: d!.rps, target: "≥ 0.7× direct", verdict: ratio >= 0.7 ? "meets" : "short",
        note: `server CPU ${p!.serverCpuUsPerRequest.toFixed(0)} µs per proxied request${errors}`
      })
      const pl = summarize(p!.latencies)
      const dl = summarize(d!.latencies)
      rows.push({
        section: "services", measure: `proxy latency, c=${concurrency} (vs the replica directly)`, unit: "ms", better: "lower",
        value: pl, baseline: dl, target: "p99 ≤ direct + 5 ms", verdict: pl.p99 <= dl.p99 + 5 ? "meets" : "short"
      })
    }
  } finally {
    await call("/api/project/main/runs/stop", { runs_names: ["bench-web"], abort: true }).catch(() => undefined)
    await server.stop()
  }
  return rows
}
