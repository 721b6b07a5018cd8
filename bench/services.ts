// Services: the proxy against calling the replica directly, against a minimal hand-written
// node:http reverse proxy in front of the same replica (./support/ref-proxy-main.ts: what any
// Node proxy hop costs here), against the barest forwarder that parses HTTP/1.1 on sockets itself
// (./support/socket-proxy-main.ts: the most a JavaScript data plane could reach here) and, where it
// is installed, against nginx in front of it (./support/nginx-proxy.ts: what a native proxy hop
// costs here), requests/s and p50/p99 latency at a few concurrencies, closed
// loop, keep-alive; one process replica of test/support/service-app.mjs on the local backend.
// Two kinds of request to that replica: `/path`, answered at once (a null replica: the proxy's
// cost against almost nothing), and `/work?cpu_us=1000`, answered after 1 ms of the replica's
// CPU (a service that does some work per request). The server, the reference proxy and the
// replica are processes of their own, so the load generator here is the same for every arm; the
// arms take turns (BENCH_SERVICES_ROUNDS rounds, default 3, the first arm rotating) so that a
// change in the machine's other load falls on all alike. The notes give each process's CPU per
// request (from /proc), figures the rest of a shared machine moves far less than req/s, and the
// server's CPU net of what it uses when no request comes (its engine following the job).
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import { httpCall } from "../test/support/api.ts"
import { applyService, freePort, waitRunning } from "../test/support/services.ts"
import type { BenchContext } from "./context.ts"
import { FINISHED, waitRun } from "./support/api.ts"
import { load, type LoadResult, type Target } from "./support/load.ts"
import { findNginx, startNginxProxy } from "./support/nginx-proxy.ts"
import { type BenchServer, startRefProxy, startServer, startSocketProxy } from "./support/server.ts"
import { loadAverage, sleep, summarize, type Row } from "./support/stats.ts"

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

const PARTS = (process.env.BENCH_SERVICES_PARTS ?? "proxy,cold,follow").split(",")
for (const part of PARTS) if (!["proxy", "cold", "follow"].includes(part)) throw new Error(`BENCH_SERVICES_PARTS: unknown part ${part}; pick from proxy, cold, follow`)

type Server = BenchServer

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const server = await startServer({ databaseUrl: ctx.databaseUrl, maxInstances: 16 })
  const rows: Array<Row> = []
  try {
    // Cold start first: its first round finds no idle instance on the fresh server.
    if (PARTS.includes("cold")) rows.push(...(await coldStartRows(ctx, server)))
    if (PARTS.includes("proxy")) rows.push(...(await proxyRows(ctx, server)))
    if (PARTS.includes("follow")) rows.push(...(await followRows(ctx, server)))
  } finally {
    await server.stop()
  }
  return rows
}

const proxyRows = async (ctx: BenchContext, server: Server): Promise<Array<Row>> => {
  const call = httpCall(server.url, server.token)
  const rows: Array<Row> = []
  let reference: Awaited<ReturnType<typeof startRefProxy>> | undefined
  let socketLevel: Awaited<ReturnType<typeof startSocketProxy>> | undefined
  let native: Awaited<ReturnType<typeof startNginxProxy>> | undefined
  try {
    const port = await applyService(call, "bench-web", { auth: true })
    await waitRunning(call, "bench-web")
    // The replica answers once it listens.
    for (let i = 0; i < 100 && (await fetch(`http://127.0.0.1:${port}/path`).catch(() => undefined)) === undefined; i++) await new Promise((r) => setTimeout(r, 100))
    reference = await startRefProxy(`127.0.0.1:${port}`)
    socketLevel = await startSocketProxy(`127.0.0.1:${port}`)
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
        { name: "socket-level", target: { url: socketLevel.url, path: kind.path, body: "{}" }, pid: socketLevel.pid },
        ...(native ? [{ name: "nginx", target: { url: native.url, path: kind.path, body: "{}" }, pid: native.pid }] : [])
      ]
      for (const concurrency of [1, 16]) {
        ctx.log(`services: ${kind.name}, c=${concurrency} (load average ${loadAverage()})`)
        const [d, r, p, s, n] = await inTurns(arms, { concurrency, durationMs }, replica)
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
        const sl = summarize(s!.latencies)
        rows.push({
          section: "services", measure: `proxy req/s, ${kind.name}, c=${concurrency} (vs a forwarder parsing HTTP/1.1 on sockets)`, unit: "req/s", better: "higher",
          value: p!.rps, baseline: s!.rps, target: "(reference)", verdict: "n/a",
          note: `the socket-level forwarder: ${(s!.rps / d!.rps).toFixed(2)}× direct, ${sl.p50.toFixed(2)} / ${sl.p99.toFixed(2)} ms, CPU µs per request ${cpu(s)}${s!.errors > 0 ? `; errors: ${s!.errors}` : ""}`
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
    ctx.log(`services: done (load average ${loadAverage()})`)
  } finally {
    await reference?.stop()
    await socketLevel?.stop()
    await native?.stop()
    await call("/api/project/main/runs/stop", { runs_names: ["bench-web"], abort: true }).catch(() => undefined)
  }
  return rows
}

const APP = path.resolve("test/support/service-app.mjs")

/**
 * Milliseconds from now to the first byte (the status line) of a GET of `url`; a refused
 * connection is tried again every 2 ms (how a caller starting the app by hand finds it up).
 */
const firstByte = (url: string, headers: Record<string, string>, timeoutMs: number): Promise<{ ms: number; status: number }> => {
  const start = performance.now()
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const req = http.get(url, { headers, agent: false }, (res) => {
        const ms = performance.now() - start
        res.resume()
        resolve({ ms, status: res.statusCode ?? 0 })
      })
      req.on("error", (error: NodeJS.ErrnoException) => {
        if (error.code === "ECONNREFUSED" && performance.now() - start < timeoutMs) setTimeout(attempt, 2)
        else reject(error)
      })
    }
    attempt()
  })
}

/**
 * Cold start: a service at zero replicas (`replicas: 0..1`, delays 0) gets a request, which the
 * proxy holds while a replica starts; the time to that request's first byte, against starting
 * the replica by hand — its command (`exec node service-app.mjs`) run in a shell — and calling
 * it as soon as it accepts. Each round applies a new service (so it is at zero), in turns with
 * the by-hand arm. A round whose replica found no idle instance (the first, on the fresh server)
 * waits for a new one (a runner starts on it first): its own row; later rounds take the idle
 * instance a round before left (stopped), as a service scaled to zero does while its instance
 * is kept (`idle_duration`): the target's row. Which it was is read off the instances list.
 */
const coldStartRows = async (ctx: BenchContext, server: Server): Promise<Array<Row>> => {
  const call = httpCall(server.url, server.token)
  const rounds = Math.max(2, Number(process.env.BENCH_SERVICES_COLD_ROUNDS ?? (ctx.full ? 20 : 10)))
  /** Rounds whose replica took an instance that was there before (idle), and rounds that made one. */
  const onIdle: Array<number> = []
  const onNew: Array<number> = []
  const byHand: Array<number> = []
  const instanceIds = async () => new Set(((await call("/api/instances/list", {})).body as Array<{ id: string }>).map((i) => i.id))
  for (let round = 0; round < rounds; round++) {
    ctx.log(`services: cold start, round ${round + 1} of ${rounds} (load average ${loadAverage()})`)
    // By hand: the replica's command in a shell.
    {
      const port = await freePort()
      const start = performance.now()
      const app = spawn("/bin/sh", ["-c", `exec node ${APP}`], { env: { ...process.env, DSTACK_SERVICE_PORT: String(port), DSTACK_RUN_NAME: "by-hand" }, stdio: "ignore" })
      try {
        const r = await firstByte(`http://127.0.0.1:${port}/path`, {}, 30_000)
        if (r.status !== 200) throw new Error(`the app started by hand answered ${r.status}`)
        byHand.push(performance.now() - start)
      } finally {
        const exited = new Promise((r) => app.once("exit", r))
        app.kill("SIGKILL")
        await exited
      }
    }
    // Through the proxy, from zero.
    const name = `bench-cold-${round}`
    await applyService(call, name, { replicas: "0..1", scaling: { metric: "rps", target: 1000, window: "30s", scale_up_delay: 0, scale_down_delay: 0 } })
    try {
      const before = await instanceIds()
      for (let i = 0; (await call("/api/project/main/services/get", { run_name: name })).status !== 200; i++) {
        if (i > 300) throw new Error(`service ${name} was not registered`)
        await sleep(20)
      }
      const r = await firstByte(`${server.url}/proxy/services/main/${name}/path`, { authorization: `Bearer ${server.token}` }, 60_000)
      if (r.status !== 200) throw new Error(`the proxy answered ${r.status} from zero replicas`)
      const run = (await call("/api/project/main/runs/get", { run_name: name })).body
      const instance = run.jobs?.[0]?.job_submissions?.at(-1)?.instance_id
      ;(instance !== undefined && before.has(instance) ? onIdle : onNew).push(r.ms)
    } finally {
      await call("/api/project/main/runs/stop", { runs_names: [name], abort: false }).catch(() => undefined)
      await waitRun(server, name, (run) => FINISHED.includes(run.status), { everyMs: 100, timeoutMs: 30_000 })
    }
  }
  const warm = summarize(onIdle)
  const hand = summarize(byHand)
  const ms = (xs: ReadonlyArray<number>) => xs.map((x) => x.toFixed(0)).join(", ")
  return [
    onIdle.length === 0
      ? { section: "services", measure: "cold start: request at zero replicas → first byte, the instance idle", unit: "ms", better: "lower", notMeasured: "no round found an idle instance" }
      : {
        section: "services", measure: `cold start: request at zero replicas → first byte, the instance idle (vs the replica's command run by hand and called), ${onIdle.length} rounds`, unit: "ms", better: "lower",
        value: warm, baseline: hand, target: "≤ 1.2× by hand", verdict: warm.p50 <= 1.2 * hand.p50 ? "meets" : "short",
        note: `ours: ${ms(onIdle)} ms; by hand: ${ms(byHand)} ms`
      },
    onNew.length === 0
      ? { section: "services", measure: "cold start: request at zero replicas → first byte, no idle instance", unit: "ms", better: "lower", notMeasured: "every round found an idle instance" }
      : {
        section: "services", measure: `cold start: request at zero replicas → first byte, no idle instance (a new one: the local backend starts a runner for it first), ${onNew.length} round(s)`, unit: "ms", better: "lower",
        value: summarize(onNew), baseline: hand, target: "(information)", verdict: "n/a",
        note: `ours: ${ms(onNew)} ms`
      }
  ]
}

/**
 * Open-loop load: `rps` GETs per second of `url` until stopped (each sent on time whatever the
 * answers before it), on kept-alive connections; notes when each replica first answered.
 */
const openLoop = (url: string, token: string, rps: number) => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
  const firstSeen = new Map<string, number>()
  let sent = 0
  let answered = 0
  let failed = 0
  const start = performance.now()
  const send = () => {
    sent++
    const req = http.get(url, { agent, headers: { authorization: `Bearer ${token}` } }, (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => {
        if (res.statusCode !== 200) return void failed++
        answered++
        const replica = (JSON.parse(Buffer.concat(chunks).toString()) as { replica: string }).replica
        if (!firstSeen.has(replica)) firstSeen.set(replica, performance.now())
      })
    })
    req.on("error", () => failed++)
  }
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - start) / 1000) * rps)
    while (sent < due) send()
  }, 2)
  return {
    firstSeen,
    counts: () => ({ sent, answered, failed }),
    /** Stops sending, lets the requests in flight end (at most 10 s), then closes the connections. */
    stop: async () => {
      clearInterval(timer)
      for (let i = 0; i < 500 && answered + failed < sent; i++) await sleep(20)
      agent.destroy()
    }
  }
}

/**
 * How fast the replica count follows a step in load, with `scale_up_delay` and
 * `scale_down_delay` 0: a service at `replicas: 1..4` (`target` 10 req/s, `window` 30 s) gets
 * 200 req/s at once (open loop), then nothing. Up: the time from the step until the autoscaler
 * wants 4 replicas (`services/get`'s desired count) and until 4 replicas have answered requests;
 * down: from the end of the load until it wants 1 and until 1 is left (the others drained and
 * stopped). The window makes most of that time by itself (the requests per second are the
 * window's average): the rows give that lag, computed from the load, beside the measured one.
 */
const followRows = async (ctx: BenchContext, server: Server): Promise<Array<Row>> => {
  const call = httpCall(server.url, server.token)
  const name = "bench-step"
  const target = 10
  const max = 4
  const windowS = 30
  const rps = 200
  const info = async () => (await call("/api/project/main/services/get", { run_name: name })).body as { desired_replicas: number; replicas: ReadonlyArray<unknown> }
  const until = async (what: string, check: (i: Awaited<ReturnType<typeof info>>) => boolean, timeoutMs: number): Promise<number> => {
    const start = performance.now()
    for (;;) {
      if (check(await info())) return performance.now()
      if (performance.now() - start > timeoutMs) throw new Error(`${name}: ${what} did not happen in ${timeoutMs / 1000} s`)
      await sleep(20)
    }
  }
  await applyService(call, name, { replicas: `1..${max}`, scaling: { metric: "rps", target, window: `${windowS}s`, scale_up_delay: 0, scale_down_delay: 0 } })
  try {
    await waitRunning(call, name)
    const url = `${server.url}/proxy/services/main/${name}/path`
    for (let i = 0; (await fetch(url, { headers: { authorization: `Bearer ${server.token}` } })).status !== 200; i++) {
      if (i > 100) throw new Error(`${name}: the first replica does not answer`)
      await sleep(100)
    }
    // Let the first replica's few requests leave the window.
    ctx.log(`services: step in load, waiting ${windowS} s for an empty window (load average ${loadAverage()})`)
    await sleep((windowS + 1) * 1000)
    ctx.log(`services: step up to ${rps} req/s`)
    const step = performance.now()
    const load = openLoop(url, server.token, rps)
    let upDecided: number
    let upServing: number
    let counts: ReturnType<typeof load.counts>
    try {
      upDecided = (await until(`desired ${max} replicas`, (i) => i.desired_replicas >= max, 120_000)) - step
      for (let i = 0; load.firstSeen.size < max; i++) {
        if (i > 6_000) throw new Error(`${name}: only ${load.firstSeen.size} replicas answered`)
        await sleep(20)
      }
      upServing = Math.max(...load.firstSeen.values()) - step
      await sleep(2_000)
    } finally {
      await load.stop()
      counts = load.counts()
    }
    const end = performance.now()
    ctx.log(`services: step down to 0 req/s`)
    if (counts.answered + counts.failed < counts.sent) throw new Error(`${name}: ${counts.sent - counts.answered - counts.failed} requests still unanswered 10 s after the load stopped`)
    const downDecided = (await until("desired 1 replica", (i) => i.desired_replicas <= 1, 120_000)) - end
    const downDone = (await until("1 replica left", (i) => i.replicas.length <= 1, 120_000)) - end
    // The window's own lag: the time until its average passes (max - 1) × target at this rate
    // (up), and until it falls to target (down).
    const windowUp = (windowS * (max - 1) * target) / rps * 1000
    const windowDown = windowS * (1 - target / rps) * 1000
    const loadNote = `${counts.sent} requests sent, ${counts.answered} answered, ${counts.failed} failed`
    return [
      {
        section: "services", measure: `replica count follows a step up: 1 → ${max} replicas answering, at ${rps} req/s, target ${target}, window ${windowS} s, delays 0 (vs the window's own lag)`, unit: "ms", better: "lower",
        value: upServing, baseline: windowUp, target: "(measured)", verdict: "n/a",
        note: `the window's own lag: its average passes ${(max - 1) * target} req/s; wanted ${upDecided.toFixed(0)} ms, all ${max} replicas answering ${upServing.toFixed(0)} ms after the step (${(upServing - upDecided).toFixed(0)} ms to start 3 replicas); ${loadNote}`
      },
      {
        section: "services", measure: `replica count follows a step down: ${max} → 1 replica left (drained, stopped) when the load stops (vs the window's own lag)`, unit: "ms", better: "lower",
        value: downDone, baseline: windowDown, target: "(measured)", verdict: "n/a",
        note: `the window's own lag: its average falls to ${target} req/s; wanted 1 replica ${downDecided.toFixed(0)} ms, 1 left ${downDone.toFixed(0)} ms after the load stopped`
      }
    ]
  } finally {
    await call("/api/project/main/runs/stop", { runs_names: [name], abort: true }).catch(() => undefined)
  }
}
