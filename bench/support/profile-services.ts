// A CPU profile of the server while the services proxy is under load, without the start-up:
// one process replica on the local backend (as bench/services.ts), then the proxied load with
// the in-process inspector profiling, then the summary (./profile-top.ts).
//   npx tsx bench/support/profile-services.ts [concurrency=16] [seconds=5] [out=/tmp/services.cpuprofile]
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import { Session } from "node:inspector/promises"
import * as os from "node:os"
import * as path from "node:path"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer } from "../../core/src/server/createServer.ts"
import { serve } from "../../core/src/server/serve.ts"
import { httpCall } from "../../test/support/api.ts"
import { applyService, waitRunning } from "../../test/support/services.ts"
import { load } from "./load.ts"

const concurrency = Number(process.argv[2] ?? 16)
const seconds = Number(process.argv[3] ?? 5)
const out = process.argv[4] ?? path.join(os.tmpdir(), "services.cpuprofile")
const TOKEN = "bench-services"

const server = await createServer({
  state: EmbeddedStateStore.layerMemory(),
  blobs: blobsMemory,
  adminToken: TOKEN,
  plugins: [backendLocal, transportLocal],
  compute: { defaultBackends: [{ type: "local", config: { work_dir: path.join(os.tmpdir(), "dstack-ts-profile-services") } }] },
  runner: { entry: path.resolve("cli/src/runner.ts") }
})
const serving = await serve(server, { port: 0, handleSignals: false })
const call = httpCall(serving.url, TOKEN)
try {
  const port = await applyService(call, "prof-web", { auth: true })
  await waitRunning(call, "prof-web")
  for (let i = 0; i < 100 && (await fetch(`http://127.0.0.1:${port}/path`).catch(() => undefined)) === undefined; i++) await new Promise((r) => setTimeout(r, 100))
  const target = { url: serving.url, path: "/proxy/services/main/prof-web/path", body: "{}", token: TOKEN }
  await load(target, { concurrency, durationMs: 1_000, maxRequests: 100_000 })
  // This process's CPU per request, direct (the load generator alone) and proxied (it and the server).
  for (const [name, t] of [["direct", { url: `http://127.0.0.1:${port}`, path: "/path", body: "{}" }], ["proxied", target]] as const) {
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    const r = await load(t, { concurrency, durationMs: 2_000, maxRequests: 1_000_000 })
    const cpu = process.cpuUsage(cpu0)
    console.log((globalThis as any).__T); (globalThis as any).__T = [0,0,0,0,0]; console.log(`${name}: ${r.rps.toFixed(0)} req/s, ${((cpu.user + cpu.system) / (r.requests + r.warmupRequests)).toFixed(0)} µs CPU/request here, wall ${(performance.now() - t0).toFixed(0)} ms, cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms`)
  }
  const session = new Session()
  session.connect()
  await session.post("Profiler.enable")
  await session.post("Profiler.start")
  const result = await load(target, { concurrency, durationMs: seconds * 1_000, maxRequests: 1_000_000 })
  const { profile } = await session.post("Profiler.stop")
  fs.writeFileSync(out, JSON.stringify(profile))
  console.log(`${result.rps.toFixed(0)} req/s, ${result.errors} errors; profile in ${out}`)
  console.log(execFileSync("npx", ["tsx", path.resolve("bench/support/profile-top.ts"), out, "30"], { encoding: "utf8" }))
} finally {
  await call("/api/project/main/runs/stop", { runs_names: ["prof-web"], abort: true }).catch(() => undefined)
  await serving.close()
}
