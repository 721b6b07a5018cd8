// The server under test, as its own process (so the load generator in the bench process does
// not share its event loop): the default build's plugins, the local backend with the given
// max_instances, embedded state under a directory (or PostgreSQL), file blobs. Prints one
// JSON line {"port": N} once it listens; SIGTERM closes it (runners included) and exits.
// Options come as JSON in BENCH_SERVER (see ./server.ts).
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks"
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Schema } from "effect"
import { createServer, runOn, RunSpec, Run, Job, JobSubmission } from "@dstack-ts/core"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { UnstorageBlobStore } from "@dstack-ts/blob-unstorage"
import { StateStore } from "../../core/src/ports/StateStore.ts"
import type { ServeFunction } from "../../core/src/runner/adapter/types.ts"
import { PostgresStateStore } from "@dstack-ts/state-postgres"
import { defaultPlugins, defaultRunnerEntry } from "../../cli/src/defaultBuild.ts"
import { jobSpecsFromRunSpec } from "../../core/src/domain/RunJobSpecs.ts"
import { encodeRecord } from "../../core/src/engine/RunRecord.ts"
import { plugin as noopPlugin, stats as noopStats, type NoopConfig } from "./noop-plugin.ts"

export interface BenchServerOptions {
  readonly dir: string
  readonly token: string
  readonly databaseUrl?: string
  readonly maxInstances?: number
  /** Finished runs to insert through the StateStore before listening. */
  readonly prefillRuns?: number
  /** The default backend: `local` (runner processes) or `noop` (./noop-plugin.ts). Default local. */
  readonly backend?: "local" | "noop"
  /** The noop backend's configuration. */
  readonly noop?: NoopConfig
  /**
   * Submitted runs (one `true` job each) stored before the server starts, as if submitted
   * while it was down: the engine finds them all queued when it starts.
   */
  readonly queuedRuns?: number
}

const options = JSON.parse(process.env.BENCH_SERVER ?? "{}") as BenchServerOptions

// BENCH_PG_SHARED_BUFFERS (e.g. 4MB): the embedded store's shared_buffers instead of its default.
const sharedBuffers = process.env.BENCH_PG_SHARED_BUFFERS
const stateLayer = () =>
  options.databaseUrl
    ? PostgresStateStore.layer({ url: options.databaseUrl })
    : EmbeddedStateStore.layer({ dataDir: path.join(options.dir, "data"), ...(sharedBuffers ? { sharedBuffers } : {}) })

/** A submitted run of one job, stored as `runs/apply` stores it. */
const submittedRun = (name: string, at: Date) => {
  const spec = Schema.decodeUnknownSync(RunSpec)({
    run_name: name,
    repo_id: "bench",
    repo_data: { repo_type: "virtual" },
    configuration: { type: "task", commands: ["true"], resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } }
  })
  const jobs = jobSpecsFromRunSpec(spec).map((jobSpec) => new Job({
    jobSpec,
    jobSubmissions: [new JobSubmission({ id: crypto.randomUUID(), submissionNum: 0, submittedAt: at, lastProcessedAt: at, status: "submitted" })]
  }))
  return new Run({ id: crypto.randomUUID(), projectName: "main", user: "admin", submittedAt: at, lastProcessedAt: at, status: "submitted", runSpec: spec, jobs })
}

if (options.queuedRuns && options.queuedRuns > 0) {
  const t0 = performance.now()
  await Effect.runPromise(Effect.scoped(Effect.gen(function* () {
    const store = yield* StateStore
    const base = Date.now() - options.queuedRuns!
    for (let n = 0; n < options.queuedRuns!; n++) {
      const at = new Date(base + n)
      const run = submittedRun(`queued-${n}`, at)
      yield* store.runs.insert({ id: run.id, project: "main", name: run.runSpec.runName!, status: "submitted", userName: "admin", repoId: "bench", submittedAt: at, doc: encodeRecord({ run, submittedToRunner: [] }) })
    }
  }).pipe(Effect.provide(stateLayer()))))
  console.error(`[bench server] queued ${options.queuedRuns} runs in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
}

const startedAt = Date.now()
const server = await createServer({
  state: stateLayer(),
  blobs: UnstorageBlobStore.layerFs({ base: path.join(options.dir, "blobs") }),
  // One server, also on PostgreSQL: nobody else needs its blobs.
  allowLocalBlobs: true,
  adminToken: options.token,
  plugins: options.backend === "noop" ? [...defaultPlugins, noopPlugin] : defaultPlugins,
  runner: { entry: defaultRunnerEntry() },
  compute: {
    defaultBackends: options.backend === "noop"
      ? [{ type: "noop", config: options.noop ?? {} }]
      : [{ type: "local", config: { max_instances: options.maxInstances ?? 2, work_dir: path.join(options.dir, "local"), terminate_grace_seconds: 2 } }]
  },
  // The logs rows write up to 1 GB from one job: no hourly log quota (upstream's default is 50 MiB).
  engine: { logQuotaPerJobHour: 0 }
})
const listeningAt = Date.now()
console.error(`[bench server] created in ${((listeningAt - startedAt) / 1000).toFixed(1)} s`)
const cpuAtListen = process.cpuUsage()

if (options.prefillRuns && options.prefillRuns > 0) {
  const t0 = performance.now()
  await runOn(server, Effect.gen(function* () {
    const store = yield* StateStore
    const base = Date.now() - options.prefillRuns! * 1000
    for (let i = 0; i < options.prefillRuns!; i++) {
      const name = `prefill-${i}`
      const at = new Date(base + i * 1000)
      const spec = Schema.decodeUnknownSync(RunSpec)({
        run_name: name,
        repo_id: "bench",
        repo_data: { repo_type: "virtual" },
        configuration: { type: "task", commands: ["echo hi"], resources: { cpu: "1..", memory: "1GB.." } }
      })
      const jobs = jobSpecsFromRunSpec(spec).map((jobSpec) => new Job({
        jobSpec,
        jobSubmissions: [new JobSubmission({ id: crypto.randomUUID(), submissionNum: 0, submittedAt: at, lastProcessedAt: at, status: "done", terminationReason: "done_by_runner", exitStatus: 0 } as any)]
      }))
      const run = new Run({ id: crypto.randomUUID(), projectName: "main", user: "admin", submittedAt: at, lastProcessedAt: at, status: "done", runSpec: spec, jobs } as any)
      yield* store.runs.insert({ id: run.id, project: "main", name, status: "done", userName: "admin", repoId: "bench", submittedAt: at, doc: encodeRecord({ run, submittedToRunner: [] }) })
    }
  }))
  console.error(`[bench server] prefilled ${options.prefillRuns} runs in ${((performance.now() - t0) / 1000).toFixed(1)} s`)
}

// GET /bench/noop-stats: when the noop runners got their jobs (see ./noop-plugin.ts), and
// when this server started; GET /bench/cpu: this process's CPU time so far; GET /bench/memory:
// its process.memoryUsage() (rss, heapTotal, heapUsed, external, arrayBuffers; `?gc=1` after
// full collections); GET /bench/loop:
// the event loop's delay (p50, p99, max in ms, sampled every 5 ms) and GC pauses since the last call.
const loopDelay = monitorEventLoopDelay({ resolution: 5 })
loopDelay.enable()
// Garbage collection pauses since the last /bench/loop: their count, total and longest (ms).
let gc = { n: 0, totalMs: 0, maxMs: 0 }
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    gc.n++
    gc.totalMs += entry.duration
    gc.maxMs = Math.max(gc.maxMs, entry.duration)
  }
}).observe({ entryTypes: ["gc"] })
const profileFor = async (ms: number, dir: string): Promise<string> => {
  const inspector = await import("node:inspector")
  const session = new inspector.Session()
  session.connect()
  const post = (method: string, params?: object) =>
    new Promise<any>((resolve, reject) => session.post(method, params ?? {}, (err, result) => (err ? reject(err) : resolve(result))))
  await post("Profiler.enable")
  await post("Profiler.setSamplingInterval", { interval: 100 })
  await post("Profiler.start")
  await new Promise((r) => setTimeout(r, ms))
  const { profile } = await post("Profiler.stop")
  session.disconnect()
  const file = path.join(dir, `window-${Date.now()}.cpuprofile`)
  fs.writeFileSync(file, JSON.stringify(profile))
  return file
}
const heapProfileFor = async (ms: number, dir: string, live = false): Promise<string> => {
  const inspector = await import("node:inspector")
  const session = new inspector.Session()
  session.connect()
  const post = (method: string, params?: object) =>
    new Promise<any>((resolve, reject) => session.post(method, params ?? {}, (err, result) => (err ? reject(err) : resolve(result))))
  await post("HeapProfiler.enable")
  await post("HeapProfiler.startSampling", { samplingInterval: 4096, includeObjectsCollectedByMajorGC: !live, includeObjectsCollectedByMinorGC: !live })
  await new Promise((r) => setTimeout(r, ms))
  const { profile } = await post("HeapProfiler.stopSampling")
  session.disconnect()
  const file = path.join(dir, `heap-${Date.now()}.heapprofile`)
  fs.writeFileSync(file, JSON.stringify(profile))
  return file
}
const fetchWithStats = (request: Request, ...rest: Array<unknown>) => {
  // Only the bench's own paths are parsed: every other request goes on as it came (this wrapper
  // is not the server's, and must cost its requests nothing).
  if (!request.url.includes("/bench/")) return (server.app.fetch as (...args: Array<unknown>) => Response | Promise<Response>)(request, ...rest)
  const url = new URL(request.url)
  if (url.pathname === "/bench/noop-stats") return Response.json({ ...noopStats(), startedAt, listeningAt, cpuAtListenMs: (cpuAtListen.user + cpuAtListen.system) / 1000 })
  if (url.pathname === "/bench/memory") {
    // `gc=1`: after full collections (the server runs with --expose-gc), what is really held.
    const gc = (globalThis as { gc?: () => void }).gc
    if (url.searchParams.get("gc") === "1" && gc !== undefined) for (let i = 0; i < 3; i++) gc()
    return Response.json(process.memoryUsage())
  }
  if (url.pathname === "/bench/loop") {
    // The event loop's delay since the last call (ms): what a request waits behind other work.
    const ms = (ns: number) => ns / 1e6
    const out = { n: loopDelay.count, p50: ms(loopDelay.percentile(50)), p99: ms(loopDelay.percentile(99)), max: ms(loopDelay.max), gc }
    loopDelay.reset()
    gc = { n: 0, totalMs: 0, maxMs: 0 }
    return Response.json(out)
  }
  if (url.pathname === "/bench/profile") {
    // A CPU profile of the next `ms` milliseconds only (no start-up in it), written as a
    // .cpuprofile into `dir`: what the requests of a load cost, function by function.
    const ms = Number(url.searchParams.get("ms") ?? 5000)
    const dir = url.searchParams.get("dir") ?? options.dir
    return profileFor(ms, dir).then((file) => Response.json({ file }))
  }
  if (url.pathname === "/bench/heap-profile") {
    // A sampling heap profile of the next `ms` milliseconds (.heapprofile into `dir`, each
    // sample kept even once collected): which code allocates how much while a load runs. With
    // `live=1`, only what is still held when it ends: which code's objects stay in memory.
    const ms = Number(url.searchParams.get("ms") ?? 5000)
    const dir = url.searchParams.get("dir") ?? options.dir
    return heapProfileFor(ms, dir, url.searchParams.get("live") === "1").then((file) => Response.json({ file }))
  }
  if (url.pathname === "/bench/cpu") {
    const u = process.cpuUsage()
    return Response.json({ userMs: u.user / 1000, systemMs: u.system / 1000 })
  }
  return (server.app.fetch as (...args: Array<unknown>) => Response | Promise<Response>)(request, ...rest)
}

// The adapter `dstack server` listens with on this runtime (upgrades too: attach tunnels,
// WebSockets of services): node:http through @hono/node-server on Node, Deno.serve on Deno.
const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined"
const serve: ServeFunction = isDeno
  ? (await import("../../core/src/runner/adapter/deno.ts")).serve
  : (await import("../../core/src/runner/adapter/node.ts")).serve
const listener = await serve(fetchWithStats as typeof server.app.fetch, { hostname: "127.0.0.1", port: 0, upgrade: server.upgrade })
console.log(JSON.stringify({ port: listener.port, pid: process.pid }))

let closing = false
const shutdown = async () => {
  if (closing) return
  closing = true
  await listener.close()
  await server.close().catch((e) => console.error("[bench server] close failed", e))
  process.exit(0)
}
process.on("SIGTERM", shutdown)
process.on("SIGINT", shutdown)
