// Services: the proxy against calling the replica directly, against a minimal hand-written
// node:http reverse proxy in front of the same replica (./support/ref-proxy-main.ts: what any
// Node proxy hop costs here) and, where it is installed, against nginx in front of it
// (./support/nginx-proxy.ts: what a native proxy hop costs here), requests/s and p50/p99 latency at a few concurrencies, closed
// loop, keep-alive; one process replica of test/support/service-app.mjs on the local backend.
// Two kinds of request to that replica: `/path`, answered at once (a null replica: the proxy's
// cost against almost nothing), and `/work?cpu_us=1000`, answered after 1 ms of the replica's
// CPU (a service that does some work per request). The server, the reference proxy and the
// replica are processes of their own, so the load generator here is the same for every arm; the
// arms take turns (BENCH_SERVICES_ROUNDS rounds, default 3, the first arm rotating) so that a
// change in the machine's other load falls on all alike. The notes give each process's CPU per
// request (from /proc), figures the rest of a shared machine moves far less than req/s, and the
// server's CPU net of what it uses when no request comes (its engine following the job).
import * as fs from "node:fs"
import * as os from "node:os"
import { httpCall } from "../test/support/api.ts"
import { applyService, waitRunning } from "../test/support/services.ts"
import type { BenchContext } from "./context.ts"
import { load, type LoadResult, type Target } from "./support/load.ts"
import { findNginx, startNginxProxy } from "./support/nginx-proxy.ts"
import { startRefProxy, startServer } from "./support/server.ts"
import { summarize, type Row } from "./support/stats.ts"

/** CPU time a process has used so far, ms (user + system, from /proc; NaN elsewhere). */
const cpuMs = (pid: number | undefined): number => {
  if (pid === undefined) return Number.NaN
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
  } catch {
    return Number.NaN
  }
}

/** The pid of the replica's process: the service app listening on `port` (undefined when not found). */
const replicaPid = (port: number): number | undefined => {
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (!fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes("service-app.mjs")) continue
      if (fs.readFileSync(`/proc/${entry}/environ`, "utf8").split("\0").includes(`DSTACK_SERVICE_PORT=${port}`)) return Number(entry)
    } catch {
      // gone, or not ours
    }
  }
  return undefined
}

const ROUNDS = Number(process.env.BENCH_SERVICES_ROUNDS ?? 3)

interface Arm {
  readonly name: string
  readonly target: Target
  /** The proxy's process, whose CPU per request the arm reports. */
  readonly pid?: number | undefined
  /** The bench server's GC pauses so far (GET /bench/loop), for the arm that is the server. */
  readonly gc?: (() => Promise<number>) | undefined
}

interface Total {
  requests: number
  errors: number
  seconds: number
  latencies: Array<number>
  counted: number
  /** CPU ms used during the arm's rounds: its proxy, the replica, this process (the load generator). */
  proxyCpuMs: number
  replicaCpuMs: number
  /** Wall-clock seconds of the arm's load calls, warm-ups included (what the CPU figures span). */
  wallS: number
  /** GC pauses of the proxy's process during the arm's rounds, ms (ours only). */
  gcMs: number
  loadCpuMs: number
}

/** The arms in turns; each arm's results added up over its rounds. */
const inTurns = async (arms: ReadonlyArray<Arm>, options: { concurrency: number; durationMs: number }, replica: number | undefined) => {
  const totals: Array<Total> = arms.map(() => ({ requests: 0, errors: 0, seconds: 0, latencies: [], counted: 0, proxyCpuMs: 0, replicaCpuMs: 0, wallS: 0, gcMs: 0, loadCpuMs: 0 }))
  for (let round = 0; round < ROUNDS; round++) {
    for (let k = 0; k < arms.length; k++) {
      const i = (round + k) % arms.length
      const arm = arms[i]!
      await arm.gc?.()
      const before = { proxy: cpuMs(arm.pid), replica: cpuMs(replica), load: process.cpuUsage(), at: performance.now() }
      const r: LoadResult = await load(arm.target, { concurrency: options.concurrency, durationMs: options.durationMs / ROUNDS, maxRequests: 200_000 })
      const t = totals[i]!
      const load_ = process.cpuUsage(before.load)
      t.proxyCpuMs += cpuMs(arm.pid) - before.proxy
      t.replicaCpuMs += cpuMs(replica) - before.replica
      t.loadCpuMs += (load_.user + load_.system) / 1000
      t.wallS += (performance.now() - before.at) / 1000
      t.gcMs += (await arm.gc?.()) ?? 0
      t.counted += r.requests + r.warmupRequests
      t.requests += r.requests
      t.errors += r.errors
      t.seconds += r.seconds
      for (const l of r.latencies) t.latencies.push(l)
    }
  }
  const us = (ms: number, n: number) => (ms * 1000) / Math.max(1, n)
  return totals.map((t) => ({
    ...t,
    rps: t.requests / t.seconds,
    proxyUs: us(t.proxyCpuMs, t.counted),
    replicaUs: us(t.replicaCpuMs, t.counted),
    loadUs: us(t.loadCpuMs, t.counted),
    gcUs: us(t.gcMs, t.counted)
  }))
}

const fmt = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : "–")

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const server = await startServer({ databaseUrl: ctx.databaseUrl })
  const call = httpCall(server.url, server.token)
  const rows: Array<Row> = []
  let reference: Awaited<ReturnType<typeof startRefProxy>> | undefined
  let native: Awaited<ReturnType<typeof startNginxProxy>> | undefined
  try {
    const port = await applyService(call, "bench-web", { auth: true })
    await waitRunning(call, "bench-web")
    // The replica answers once it listens.
    for (let i = 0; i < 100 && (await fetch(`http://127.0.0.1:${port}/path`).catch(() => undefined)) === undefined; i++) await new Promise((r) => setTimeout(r, 100))
    reference = await startRefProxy(`127.0.0.1:${port}`)
    const nginx = findNginx()
    if (nginx === undefined) ctx.log("services: nginx is not installed, so the native reference arm is left out (Debian: apt-get install nginx-light)")
    else native = await startNginxProxy(nginx, `127.0.0.1:${port}`)
    const replica = replicaPid(port)
    /** The server's GC pauses (ms) since the last call. */
    const serverGcMs = async () => ((await (await fetch(`${server.url}/bench/loop`)).json()) as { gc: { totalMs: number } }).gc.totalMs
    // The server's own CPU while no request comes (the engine following the service's job, its
    // store): counted in its CPU per proxied request, so the notes give that figure net of it too.
    await new Promise((r) => setTimeout(r, 1_000))
    const idle0 = { cpu: cpuMs(server.pid), at: performance.now() }
    await new Promise((r) => setTimeout(r, 3_000))
    const idleMsPerS = (cpuMs(server.pid) - idle0.cpu) / ((performance.now() - idle0.at) / 1000)
    ctx.log(`services: the server idle uses ${idleMsPerS.toFixed(1)} ms CPU per s`)
    const durationMs = ctx.full ? 10_000 : 3_000
    const kinds = [
      { name: "null replica", path: "/path" },
      { name: "replica doing 1 ms of CPU", path: "/work?cpu_us=1000" }
    ]
    for (const kind of kinds) {
      const arms: Array<Arm> = [
        { name: "direct", target: { url: `http://127.0.0.1:${port}`, path: kind.path, body: "{}" } },
        { name: "reference", target: { url: reference.url, path: kind.path, body: "{}" }, pid: reference.pid },
        { name: "ours", target: { url: server.url, path: `/proxy/services/main/bench-web${kind.path}`, body: "{}", token: server.token }, pid: server.pid, gc: serverGcMs },
        ...(native ? [{ name: "nginx", target: { url: native.url, path: kind.path, body: "{}" }, pid: native.pid }] : [])
      ]
      for (const concurrency of [1, 16]) {
        ctx.log(`services: ${kind.name}, c=${concurrency} (load average ${os.loadavg().map((l) => l.toFixed(1)).join(" ")})`)
        const [d, r, p, n] = await inTurns(arms, { concurrency, durationMs }, replica)
        const ratio = p!.rps / d!.rps
        const errors = p!.errors + r!.errors + d!.errors > 0 ? `; errors: ${p!.errors} proxy / ${r!.errors} reference / ${d!.errors} direct` : ""
        const cpu = (t: typeof p) => `${fmt(t!.proxyUs)} proxy + ${fmt(t!.replicaUs)} replica + ${fmt(t!.loadUs)} load generator`
        rows.push({
          section: "services", measure: `proxy req/s, ${kind.name}, c=${concurrency} (vs the replica directly)`, unit: "req/s", better: "higher",
          value: p!.rps, baseline: d!.rps, target: "≥ 0.7× direct", verdict: ratio >= 0.7 ? "meets" : "short",
          note: `CPU µs per request: ours ${cpu(p)} (the proxy net of the server's idle ${idleMsPerS.toFixed(0)} ms/s: ${fmt(p!.proxyUs - (idleMsPerS * p!.wallS * 1000) / Math.max(1, p!.counted))}; the server's GC pauses, wall-clock, ${fmt(p!.gcUs)}); reference ${cpu(r)}; direct ${fmt(d!.replicaUs)} replica + ${fmt(d!.loadUs)} load generator${errors}`
        })
        rows.push({
          section: "services", measure: `proxy req/s, ${kind.name}, c=${concurrency} (vs a minimal node:http proxy)`, unit: "req/s", better: "higher",
          value: p!.rps, baseline: r!.rps, target: "(reference)", verdict: "n/a",
          note: `the reference proxy: ${(r!.rps / d!.rps).toFixed(2)}× direct`
        })
        if (n !== undefined) {
          const nl = summarize(n.latencies)
          rows.push({
            section: "services", measure: `proxy req/s, ${kind.name}, c=${concurrency} (vs nginx, a native proxy hop)`, unit: "req/s", better: "higher",
            value: p!.rps, baseline: n.rps, target: "(reference)", verdict: "n/a",
            note: `nginx: ${(n.rps / d!.rps).toFixed(2)}× direct, ${nl.p50.toFixed(2)} / ${nl.p99.toFixed(2)} ms, CPU µs per request ${cpu(n)}${n.errors > 0 ? `; errors: ${n.errors}` : ""}`
          })
        }
        const pl = summarize(p!.latencies)
        const dl = summarize(d!.latencies)
        const rl = summarize(r!.latencies)
        rows.push({
          section: "services", measure: `proxy latency, ${kind.name}, c=${concurrency} (vs the replica directly)`, unit: "ms", better: "lower",
          value: pl, baseline: dl, target: "p99 ≤ direct + 5 ms", verdict: pl.p99 <= dl.p99 + 5 ? "meets" : "short",
          note: `the reference proxy: ${rl.p50.toFixed(2)} / ${rl.p99.toFixed(2)} ms`
        })
      }
    }
    ctx.log(`services: done (load average ${os.loadavg().map((l) => l.toFixed(1)).join(" ")})`)
  } finally {
    await reference?.stop()
    await native?.stop()
    await call("/api/project/main/runs/stop", { runs_names: ["bench-web"], abort: true }).catch(() => undefined)
    await server.stop()
  }
  return rows
}
