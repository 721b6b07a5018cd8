// A/B of submit → RUNNING and submit → first log byte (process executor, local backend)
// between this checkout's server and another checkout's, on a busy machine: both servers run
// at once and take turns run by run, so whatever else the machine does falls on both alike.
// Prints the medians of each, with when the job was first seen in each status.
//   AB_OTHER=/path/to/other/checkout npx tsx bench/support/ab-latency.ts [runs=20]
import * as fs from "node:fs"
import { oneRun } from "../latency.ts"
import { startServer as startHere, type BenchServer } from "./server.ts"

const other = process.env.AB_OTHER
if (!other) throw new Error("set AB_OTHER to the other checkout's directory")
const reps = Number(process.argv[2] ?? 20)
const { startServer: startOther } = (await import(`${other}/bench/support/server.ts`)) as { startServer: typeof startHere }
/** CPU time (user + system, ms) of a process, and of its children that ended (runners). */
const cpuMs = (pid: number): [number, number] => {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  return [((Number(f[11]) + Number(f[12])) * 1000) / 100, ((Number(f[13]) + Number(f[14])) * 1000) / 100]
}
const median = (xs: Array<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const [here, there] = await Promise.all([startHere(), startOther()])
const servers: Array<[string, BenchServer]> = [["this", here], ["other", there]]
try {
  const samples: Record<string, Array<Awaited<ReturnType<typeof oneRun>>>> = { this: [], other: [] }
  const cpu: Record<string, [number, number]> = { this: [0, 0], other: [0, 0] }
  for (const [name, s] of servers) await oneRun(s, `warm-${name}`, {})
  for (let i = 0; i < reps; i++) {
    for (const [name, s] of i % 2 === 0 ? servers : [...servers].reverse()) {
      const before = cpuMs(s.pid)
      samples[name]!.push(await oneRun(s, `ab-${name}-${i}`, {}))
      const after = cpuMs(s.pid)
      cpu[name] = [cpu[name]![0] + after[0] - before[0], cpu[name]![1] + after[1] - before[1]]
    }
  }
  for (const [name] of servers) {
    const xs = samples[name]!
    const statuses = [...new Set(xs.flatMap((x) => Object.keys(x.seen ?? {})))]
    const seen = statuses.map((st) => `${st} ${median(xs.flatMap((x) => (x.seen?.[st] === undefined ? [] : [x.seen[st]!]))).toFixed(0)}`).join(", ")
    console.log(`${name}: running ${median(xs.map((x) => x.running)).toFixed(0)} ms, first byte ${median(xs.map((x) => x.firstByte)).toFixed(0)} ms, apply ${median(xs.map((x) => x.applyMs ?? 0)).toFixed(0)} ms, CPU per run: server ${(cpu[name]![0] / reps).toFixed(0)} ms, its ended children ${(cpu[name]![1] / reps).toFixed(0)} ms; first seen: ${seen}`)
  }
} finally {
  await Promise.all(servers.map(([, s]) => s.stop()))
}
