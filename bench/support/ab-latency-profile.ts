// A/B CPU profiles of submit → done (process executor, local backend) between this checkout's
// server and another checkout's: both servers profile the same window (no start-up in it)
// while runs take turns on them, then each profile's top functions are printed.
//   AB_OTHER=/path/to/other/checkout npx tsx bench/support/ab-latency-profile.ts [seconds=20] [dir=/tmp]
import { execFileSync } from "node:child_process"
import * as path from "node:path"
import { oneRun } from "../latency.ts"
import { startServer as startHere, type BenchServer } from "./server.ts"

const other = process.env.AB_OTHER
if (!other) throw new Error("set AB_OTHER to the other checkout's directory")
const seconds = Number(process.argv[2] ?? 20)
const dir = process.argv[3] ?? "/tmp"
const { startServer: startOther } = (await import(`${other}/bench/support/server.ts`)) as { startServer: typeof startHere }
const [here, there] = await Promise.all([startHere(), startOther()])
const servers: Array<[string, BenchServer]> = [["this", here], ["other", there]]
try {
  for (const [name, s] of servers) for (let i = 0; i < 3; i++) await oneRun(s, `warm-${name}-${i}`, {})
  const files = servers.map(([, s]) => fetch(`${s.url}/bench/profile?ms=${seconds * 1000}&dir=${dir}`).then((r) => r.json() as Promise<{ file: string }>))
  const until = Date.now() + seconds * 1000 - 1500
  const count: Record<string, number> = { this: 0, other: 0 }
  for (let i = 0; Date.now() < until; i++) {
    for (const [name, s] of i % 2 === 0 ? servers : [...servers].reverse()) {
      await oneRun(s, `abp-${name}-${i}`, {})
      count[name]!++
    }
  }
  const [a, b] = await Promise.all(files)
  for (const [[name], file] of [[servers[0]!, a!], [servers[1]!, b!]] as const) {
    console.log(`== ${name}: ${count[name]} runs; ${file.file}`)
    console.log(execFileSync(process.execPath, ["--import", "tsx", path.join(import.meta.dirname, "profile-top.ts"), file.file, "30"], { encoding: "utf8" }))
  }
} finally {
  await Promise.all(servers.map(([, s]) => s.stop()))
}
