// Idle CPU of this checkout's server and another's (AB_OTHER), each with N stored runs.
import * as fs from "node:fs"
import * as path from "node:path"
import { startServer as startHere } from "./server.ts"
const other = process.env.AB_OTHER!
const { startServer: startOther } = (await import(path.join(other, "bench/support/server.ts"))) as { startServer: typeof startHere }
const cpuMs = (pid: number): number => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
}
const [a, b] = await Promise.all([startHere({ prefillRuns: 200 }), startOther({ prefillRuns: 200 })])
await new Promise((r) => setTimeout(r, 3000))
const a0 = cpuMs(a.pid), b0 = cpuMs(b.pid)
await new Promise((r) => setTimeout(r, 10000))
console.log(`idle CPU over 10 s: this ${(cpuMs(a.pid) - a0).toFixed(0)} ms, other ${(cpuMs(b.pid) - b0).toFixed(0)} ms`)
await Promise.all([a.stop(), b.stop()])
