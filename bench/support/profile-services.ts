// The services proxy's CPU per request against the reference proxy's, and a CPU profile of the
// server while the proxy is under load (no start-up in it): the bench's server process
// (./server.ts) with one process replica on the local backend, and ./ref-proxy-main.ts in front
// of the same replica. Arms in turns (`rounds`), each process's CPU from /proc; then a window
// of the server's profile (GET /bench/profile) while the proxied load runs, and its summary.
//   npx tsx bench/support/profile-services.ts [concurrency=16] [seconds=5] [rounds=3] [path=/path]
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { httpCall } from "../../test/support/api.ts"
import { applyService, waitRunning } from "../../test/support/services.ts"
import { load, type Target } from "./load.ts"
import { startRefProxy, startServer } from "./server.ts"
import { loadAverage } from "./stats.ts"

const concurrency = Number(process.argv[2] ?? 16)
const seconds = Number(process.argv[3] ?? 5)
const rounds = Number(process.argv[4] ?? 3)
const replicaPath = process.argv[5] ?? "/path"

const cpuMs = (pid: number): number => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
}

const server = await startServer()
const call = httpCall(server.url, server.token)
let reference: Awaited<ReturnType<typeof startRefProxy>> | undefined
try {
  const port = await applyService(call, "prof-web", { auth: true })
  await waitRunning(call, "prof-web")
  for (let i = 0; i < 100 && (await fetch(`http://127.0.0.1:${port}/path`).catch(() => undefined)) === undefined; i++) await new Promise((r) => setTimeout(r, 100))
  reference = await startRefProxy(`127.0.0.1:${port}`)
  const ours: Target = { url: server.url, path: `/proxy/services/main/prof-web${replicaPath}`, body: "{}", token: server.token }
  const arms = [
    { name: "reference", target: { url: reference.url, path: replicaPath, body: "{}" } as Target, pid: reference.pid },
    { name: "ours", target: ours, pid: server.pid }
  ]
  const totals = arms.map(() => ({ cpu: 0, n: 0, s: 0, rps: [] as Array<number> }))
  console.log(`load average ${loadAverage()}`)
  for (let round = 0; round < rounds; round++) {
    for (const [i, arm] of arms.entries()) {
      const before = cpuMs(arm.pid)
      const r = await load(arm.target, { concurrency, durationMs: 2_000, maxRequests: 1_000_000 })
      totals[i]!.cpu += cpuMs(arm.pid) - before
      totals[i]!.n += r.requests + r.warmupRequests
      totals[i]!.rps.push(r.rps)
    }
  }
  for (const [i, arm] of arms.entries()) {
    const t = totals[i]!
    console.log(`${arm.name}: ${((t.cpu * 1000) / t.n).toFixed(0)} µs CPU per request (${t.n} requests), req/s per round ${t.rps.map((x) => x.toFixed(0)).join(" ")}`)
  }
  console.log(`load average ${loadAverage()}`)
  const profiled = fetch(`${server.url}/bench/profile?ms=${seconds * 1000}&dir=${os.tmpdir()}`).then((r) => r.json() as Promise<{ file: string }>)
  const result = await load(ours, { concurrency, durationMs: seconds * 1_000, maxRequests: 1_000_000, warmupMs: 0 })
  const { file } = await profiled
  console.log(`${result.rps.toFixed(0)} req/s, ${result.errors} errors; profile in ${file}`)
  console.log(execFileSync(process.execPath, ["--import", "tsx", path.resolve("bench/support/profile-top.ts"), file, "40"], { encoding: "utf8" }))
} finally {
  await reference?.stop()
  await call("/api/project/main/runs/stop", { runs_names: ["prof-web"], abort: true }).catch(() => undefined)
  await server.stop()
}
