// A CPU profile of the server while it answers one route under load, without its start-up:
// starts a bench server, warms it, asks it (GET /bench/profile) to profile the next seconds
// while the load runs, and prints the summary (./profile-top.ts).
//   npx tsx bench/support/profile-window.ts [concurrency=16] [seconds=5]
import { execFileSync } from "node:child_process"
import * as path from "node:path"
import { startServer } from "./server.ts"
import { load } from "./load.ts"

const c = Number(process.argv[2] ?? 16)
const seconds = Number(process.argv[3] ?? 5)
const server = await startServer({ prefillRuns: 200 })
try {
  const target = { url: server.url, path: "/api/project/main/runs/get", body: JSON.stringify({ run_name: "prefill-100" }), token: server.token }
  await load(target, { concurrency: c, durationMs: 2000, maxRequests: 1e7, warmupMs: 0 })
  const profiled = fetch(`${server.url}/bench/profile?ms=${seconds * 1000}&dir=/tmp`).then((r) => r.json() as Promise<{ file: string }>)
  const result = await load(target, { concurrency: c, durationMs: seconds * 1000, maxRequests: 1e7, warmupMs: 0 })
  const { file } = await profiled
  console.log(`${result.requests} requests; profile ${file}`)
  console.log(execFileSync(process.execPath, ["--import", "tsx", path.join(import.meta.dirname, "profile-top.ts"), file, "45"], { encoding: "utf8" }))
} finally {
  await server.stop()
}
