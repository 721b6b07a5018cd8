// A/B of one API route between this checkout's server and another checkout's, on a busy
// machine: both servers run at once and take turns under the same load in short slices, so
// whatever else the machine does falls on both alike. Prints each server's CPU µs per request
// (the median of its slices) and req/s at each concurrency.
//   AB_OTHER=/path/to/other/checkout npx tsx bench/support/ab-api.ts [route=get] [slices=8]
import * as fs from "node:fs"
import * as path from "node:path"
import { startServer as startHere, type BenchServer } from "./server.ts"
import { load, type Target } from "./load.ts"

const other = process.env.AB_OTHER
if (!other) throw new Error("set AB_OTHER to the other checkout's directory")
const slices = Number(process.argv[3] ?? 8)
const runs = Number(process.env.AB_RUNS ?? 200)
const { startServer: startOther } = (await import(path.join(other, "bench/support/server.ts"))) as { startServer: typeof startHere }

const cpuMs = (pid: number): number => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
}
const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const [here, there] = await Promise.all([startHere({ prefillRuns: runs }), startOther({ prefillRuns: runs })])
const servers: Array<[string, BenchServer]> = [["this", here], ["other", there]]
try {
  const body = JSON.stringify({ run_name: `prefill-${Math.floor(runs / 2)}` })
  const path_ = "/api/project/main/runs/get"
  for (const [, s] of servers) await load({ url: s.url, path: path_, body, token: s.token }, { concurrency: 4, durationMs: 1500, maxRequests: 1e6, warmupMs: 0 })
  for (const c of [1, 16, 64]) {
    const cpu: Record<string, Array<number>> = { this: [], other: [] }
    const rps: Record<string, Array<number>> = { this: [], other: [] }
    for (let i = 0; i < slices; i++) {
      for (const [name, s] of i % 2 === 0 ? servers : [...servers].reverse()) {
        const before = cpuMs(s.pid)
        const r = await load({ url: s.url, path: path_, body, token: s.token }, { concurrency: c, durationMs: 500, maxRequests: 1e6, warmupMs: 50 })
        cpu[name]!.push(((cpuMs(s.pid) - before) * 1000) / Math.max(1, r.requests + r.warmupRequests))
        rps[name]!.push(r.rps)
      }
    }
    console.log(`c=${c}: this ${median(cpu.this!).toFixed(0)} µs/req ${median(rps.this!).toFixed(0)} req/s; other ${median(cpu.other!).toFixed(0)} µs/req ${median(rps.other!).toFixed(0)} req/s`)
  }
} finally {
  await Promise.all(servers.map(([, s]) => s.stop()))
}
