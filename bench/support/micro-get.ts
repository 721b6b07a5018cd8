// In-process micro-benchmark of the request path: CPU µs per `runs/get` through the server's
// Hono app (no sockets), against a bare Hono route answering the same bytes. For profiling the
// router (node --cpu-prof): npx tsx bench/support/micro-get.ts [N]
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Schema } from "effect"
import { Hono } from "hono"
import { createServer, runOn, RunSpec, Run, Job, JobSubmission } from "@dstack-ts/core"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { UnstorageBlobStore } from "@dstack-ts/blob-unstorage"
import { StateStore } from "../../core/src/ports/StateStore.ts"
import { defaultPlugins } from "../../cli/src/defaultBuild.ts"
import { jobSpecsFromRunSpec } from "../../core/src/domain/RunJobSpecs.ts"
import { encodeRecord } from "../../core/src/engine/RunRecord.ts"

const n = Number(process.argv[2] ?? 20_000)
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "micro-get-"))
const token = "micro-token"
const server = await createServer({
  state: EmbeddedStateStore.layer({ dataDir: path.join(dir, "data") }),
  blobs: UnstorageBlobStore.layerMemory(),
  adminToken: token,
  plugins: defaultPlugins,
  compute: { defaultBackends: [] }
})
await runOn(server, Effect.gen(function* () {
  const store = yield* StateStore
  const at = new Date()
  const spec = Schema.decodeUnknownSync(RunSpec)({ run_name: "r1", repo_id: "bench", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["echo hi"] } })
  const jobs = jobSpecsFromRunSpec(spec).map((jobSpec) => new Job({ jobSpec, jobSubmissions: [new JobSubmission({ id: crypto.randomUUID(), submissionNum: 0, submittedAt: at, lastProcessedAt: at, status: "done", terminationReason: "done_by_runner", exitStatus: 0 } as any)] }))
  const run = new Run({ id: crypto.randomUUID(), projectName: "main", user: "admin", submittedAt: at, lastProcessedAt: at, status: "done", runSpec: spec, jobs } as any)
  yield* store.runs.insert({ id: run.id, project: "main", name: "r1", status: "done", userName: "admin", repoId: "bench", submittedAt: at, doc: encodeRecord({ run, submittedToRunner: [] }) })
}))

const body = JSON.stringify({ run_name: "r1" })
const request = () => new Request("http://x/api/project/main/runs/get", { method: "POST", headers: { "content-type": "application/json", "content-length": String(body.length), authorization: `Bearer ${token}` }, body })
const first = await server.app.fetch(request())
const bytes = await first.text()
if (first.status !== 200) throw new Error(`runs/get: ${first.status} ${bytes}`)
const bare = new Hono()
bare.post("/api/project/:project_name/runs/get", async (c) => {
  await c.req.text()
  return new Response(bytes, { headers: { "content-type": "application/json" } })
})

const measure = async (label: string, app: { fetch: (r: Request) => Response | Promise<Response> }) => {
  for (let i = 0; i < 2_000; i++) await (await app.fetch(request())).text()
  const before = process.cpuUsage()
  for (let i = 0; i < n; i++) await (await app.fetch(request())).text()
  const used = process.cpuUsage(before)
  const us = (used.user + used.system) / n
  console.log(`${label}: ${us.toFixed(1)} µs CPU per request (${n} requests)`)
  return us
}
const only = process.env.MICRO_ONLY
if (only === "server") { await measure("server   ", server.app); await server.close(); process.exit(0) }
const rounds = Number(process.env.MICRO_ROUNDS ?? 3)
const diffs: Array<number> = []
const servers: Array<number> = []
const bares: Array<number> = []
for (let r = 0; r < rounds; r++) {
  const b = await measure("bare hono", bare)
  const s = await measure("server   ", server.app)
  const b2 = await measure("bare hono", bare)
  diffs.push(s - (b + b2) / 2)
  servers.push(s)
  bares.push(b, b2)
}
diffs.sort((x, y) => x - y)
const mins = (xs: Array<number>) => Math.min(...xs)
console.log(`min server ${mins(servers).toFixed(1)} min bare ${mins(bares).toFixed(1)}: diff ${(mins(servers) - mins(bares)).toFixed(1)} µs`)
console.log(`server − bare: median ${diffs[Math.floor(diffs.length / 2)]!.toFixed(1)} µs (${diffs.map((d) => d.toFixed(1)).join(", ")})`)
await server.close()
fs.rmSync(dir, { recursive: true, force: true })
