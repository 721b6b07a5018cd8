// dstack on a real Slurm cluster (slurm-wlm on netns hosts, test/support/slurm.ts) through a real
// server: the project's `slurm` backend configured over the API, a plan for a job too big for
// any partition that says why, a task that runs on a compute node with its log streamed, a
// long task whose allocation carries max_duration as its time limit, and a stop that cancels
// the Slurm job (gone from squeue).
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, expect, it } from "vitest"
import backendSlurm from "@dstack-ts/backend-slurm"
import transportSsh from "@dstack-ts/transport-ssh"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { appCall } from "../support/api.ts"
import { createSlurmCluster, describeWithSlurm, type SlurmCluster } from "../support/slurm.ts"

const RUNNER_ENTRY = fileURLToPath(new URL("../../cli/src/runner.ts", import.meta.url))
const TOKEN = "slurm-e2e-token"
let server: Server
let cluster: SlurmCluster
const call = appCall(() => server, TOKEN)

const until = async <T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 120_000): Promise<T> => {
  const start = Date.now()
  let last: T = await get()
  while (!ok(last)) {
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not in time; last: ${JSON.stringify(last).slice(0, 3000)}`)
    await new Promise((r) => setTimeout(r, 250))
    last = await get()
  }
  return last
}
const getRun = async (name: string) => (await call("/api/project/main/runs/get", { run_name: name })).body
const finished = (run: any) => ["done", "failed", "terminated"].includes(run.status)
const logsOf = async (name: string) => (await call("/api/project/main/logs/poll", { run_name: name })).body.logs.map((l: any) => l.message).join("")
const runSpec = (configuration: Record<string, unknown>, runName?: string) => ({
  run_spec: {
    ...(runName === undefined ? {} : { run_name: runName }),
    repo_id: "e2e",
    repo_data: { repo_type: "virtual" },
    configuration: { type: "task", backends: ["slurm"], resources: { cpu: 1, memory: "0.5GB", disk: "1GB.." }, ...configuration }
  }
})

describeWithSlurm(() => {
  beforeAll(async () => {
    cluster = await createSlurmCluster({ nodes: 2, partitions: [{ name: "debug", default: true, maxTimeMinutes: 30 }] })
    server = await createServer({
      state: EmbeddedStateStore.layerMemory(),
      blobs: blobsMemory,
      adminToken: TOKEN,
      plugins: [backendSlurm, transportSsh],
      runner: { entry: RUNNER_ENTRY },
      engine: { resyncMs: 1_000 }
    })
    const created = await call("/api/project/main/backends/create", {
      type: "slurm",
      clusters: [{ name: "netns", hostname: cluster.login.ip, user: "root", private_key: { content: cluster.net.privateKey } }],
      install_dir: `.dstack-ts/slurm-${cluster.net.name}`
    })
    expect(created.status, JSON.stringify(created.body)).toBe(200)
  }, 180_000)
  afterAll(async () => {
    await server?.close()
    await cluster?.down()
    if (cluster) fs.rmSync(path.join(os.homedir(), `.dstack-ts/slurm-${cluster.net.name}`), { recursive: true, force: true })
  })

  it("refuses a backend configuration naming an unknown key, with the plugin's message", async () => {
    const bad = await call("/api/project/main/backends/update", { type: "slurm", clusters: [{ name: "x", hostname: "h", user: "u", private_key: { content: "k" }, partition: "p" }] })
    expect(bad.status).toBe(400)
    expect(JSON.stringify(bad.body)).toMatch(/partition/)
  })

  it("plans from the cluster's partitions, and says why a job too big for any partition has no offer", async () => {
    const plan = await call("/api/project/main/runs/get_plan", runSpec({ commands: ["true"] }))
    expect(plan.status, JSON.stringify(plan.body)).toBe(200)
    expect(plan.body.job_plans[0].offers.map((o: any) => [o.backend, o.region, o.availability_zones])).toEqual([["slurm", "netns", ["debug"]]])
    const big = await call("/api/project/main/runs/get_plan", runSpec({ commands: ["true"], resources: { cpu: 64, memory: "1GB", disk: "1GB.." } }))
    expect(big.body.job_plans[0].offers).toEqual([])
    expect(big.body.job_plans[0].no_offers_reason).toMatch(/cpu/)
  })

  it("runs a task on a compute node with its log, then a long one with max_duration as the Slurm time limit, stopped by scancel", async () => {
    const applied = await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo hello from $(hostname -I) node $SLURMD_NODENAME"], idle_duration: 0 }, "slurm-hello") })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    const hello = await until("slurm-hello ends", () => getRun("slurm-hello"), finished, 180_000)
    expect(hello.status, JSON.stringify(hello.jobs[0].job_submissions)).toBe("done")
    const pd = hello.jobs[0].job_submissions[0].job_provisioning_data
    expect(pd.backend).toBe("slurm")
    expect(pd.availability_zone).toBe("debug")
    expect(await logsOf("slurm-hello")).toMatch(new RegExp(`hello from ${pd.hostname.replace(/\./g, "\\.")}\\s+node n\\d`))
    // idle_duration 0: the allocation is cancelled once the job is done.
    await until("the hello allocation cancelled", () => cluster.queueState(pd.instance_id), (s) => s === undefined, 60_000)

    await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo started", "sleep 600"], max_duration: "5m", idle_duration: 0 }, "slurm-long") })
    const running = await until("slurm-long running", () => getRun("slurm-long"), (r) => r.jobs[0].job_submissions.at(-1).status === "running" || finished(r), 180_000)
    const sub = running.jobs[0].job_submissions.at(-1)
    expect(sub.status, JSON.stringify(sub)).toBe("running")
    const jobId = sub.job_provisioning_data.instance_id
    expect(await cluster.queueState(jobId)).toBe("RUNNING")
    expect(await cluster.slurm("scontrol", ["show", "-o", "job", jobId])).toMatch(/TimeLimit=00:05:00/)
    await until("slurm-long logs", () => logsOf("slurm-long"), (l) => l.includes("started"), 60_000)

    const stopped = await call("/api/project/main/runs/stop", { runs_names: ["slurm-long"], abort: false })
    expect(stopped.status, JSON.stringify(stopped.body)).toBe(200)
    const ended = await until("slurm-long ends", () => getRun("slurm-long"), finished, 120_000)
    expect(ended.status).toBe("terminated")
    await until("the Slurm job gone from squeue", () => cluster.queueState(jobId), (s) => s === undefined, 60_000)
  }, 600_000)
})
