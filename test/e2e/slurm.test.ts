// dstack on a real Slurm cluster (slurm-wlm on netns hosts, test/support/slurm.ts) through a real
// server: the project's `slurm` backend configured over the API, a plan for a job too big for
// any partition that says why, a task that runs on a compute node with its log streamed, a
// long task whose allocation carries max_duration as its time limit, and a stop that cancels
// the Slurm job (gone from squeue) — also while it still pends in the queue; a task of more
// nodes than the partition has fails before sbatch, naming nodes; a server restarted (on a store
// on disk) while a task runs reaches its runner again through the login node and follows it to
// its end. A job shows pulling on its node while its runner starts in the allocation; one whose
// runner never starts fails with waiting_runner_limit_exceeded within the provisioning timeout,
// and a stop while it starts cancels the allocation.
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
import { Client } from "@dstack-ts/client"
import { render as renderPs } from "../../cli/src/commands/ps.ts"
import { appCall } from "../support/api.ts"
import { createSlurmCluster, describeWithSlurm, type SlurmCluster } from "../support/slurm.ts"
import { makeUntil } from "../support/until.ts"

const RUNNER_ENTRY = fileURLToPath(new URL("../../cli/src/runner.ts", import.meta.url))
const TOKEN = "slurm-e2e-token"
let server: Server
let cluster: SlurmCluster
const call = appCall(() => server, TOKEN)

const until = makeUntil({ timeoutMs: 120_000, everyMs: 250 })
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

// Each node checks that its entry in DSTACK_NODES_IPS is an address of its own; rank 0 listens at
// the master's address, the others connect and send their rank; the master answers every rank
// with the address it came from, and each node prints what it saw.
const RENDEZVOUS = `
const net = require("net"), os = require("os")
const rank = Number(process.env.DSTACK_NODE_RANK), n = Number(process.env.DSTACK_NODES_NUM), ip = process.env.DSTACK_MASTER_NODE_IP
const ips = process.env.DSTACK_NODES_IPS.split("\\n")
const mine = Object.values(os.networkInterfaces()).flat().map((a) => a.address)
console.log("rank " + rank + " of " + n + " master " + ip + " ips " + ips.join(",") + " own " + mine.includes(ips[rank]) + " slurm " + process.env.SLURM_JOB_ID)
console.log("hostfile " + require("fs").readFileSync(process.env.DSTACK_MPI_HOSTFILE, "utf8").trim().split("\\n").join(";"))
if (rank === 0) {
  const seen = ["0@" + ip], socks = []
  net.createServer((s) => s.on("data", (d) => {
    seen.push(String(d) + "@" + s.remoteAddress); socks.push(s)
    if (seen.length === n) {
      const all = seen.sort().join(",")
      for (const x of socks) x.end(all)
      console.log("rank 0 saw " + all)
      setTimeout(() => process.exit(0), 200)
    }
  })).listen(29517, ip)
} else {
  const attempt = () => {
    let got = ""
    const s = net.connect({ port: 29517, host: ip, localAddress: ips[rank] }, () => s.write(String(rank)))
    s.on("data", (d) => (got += d))
    s.on("end", () => { console.log("rank " + rank + " saw " + got); process.exit(0) })
    s.on("error", () => setTimeout(attempt, 100))
  }
  attempt()
}
`
const jobLogs = async (run: any, jobNum: number) => {
  const sub = run.jobs[jobNum].job_submissions.at(-1)
  return (await call("/api/project/main/logs/poll", { run_name: run.run_spec.run_name, job_submission_id: sub.id })).body.logs.map((l: any) => l.message).join("")
}

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

  it("ends a task whose Slurm time limit runs out with max_duration_exceeded, read back from Slurm's TIMEOUT", async () => {
    await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo started", "sleep 900"], max_duration: "10m", idle_duration: 0 }, "slurm-timeout") })
    const running = await until("slurm-timeout running", () => getRun("slurm-timeout"), (r) => r.jobs[0].job_submissions.at(-1).status === "running" || finished(r), 180_000)
    const jobId = running.jobs[0].job_submissions.at(-1).job_provisioning_data.instance_id
    expect(await cluster.slurm("scontrol", ["show", "-o", "job", jobId])).toMatch(/TimeLimit=00:10:00/)
    // Slurm, not the runner's own max_duration timer, is to end the job: the allocation's time
    // limit (max_duration's) is lowered to a minute, as an administrator could.
    await cluster.slurm("scontrol", ["update", `JobId=${jobId}`, "TimeLimit=1"])
    const ended = await until("slurm-timeout ends", () => getRun("slurm-timeout"), finished, 240_000)
    const sub = ended.jobs[0].job_submissions.at(-1)
    expect([sub.status, sub.termination_reason], JSON.stringify(sub)).toEqual(["terminated", "max_duration_exceeded"])
    expect(sub.termination_reason_message).toMatch(new RegExp(`^Slurm TIMEOUT \\(TimeLimit\\): Slurm job ${jobId} on netns`))
  }, 600_000)

  it("shows a job waiting in the Slurm queue as provisioning with Slurm's reason (dstack ps -v), and runs it once the nodes free up", async () => {
    // Both compute nodes taken by a job of someone else's.
    const filler = (await cluster.slurm("sbatch", ["--parsable", "--nodes=2", "--exclusive", "--output=/dev/null", "--wrap", "srun sleep 600"])).trim()
    await until("the filler running", () => cluster.queueState(filler), (s) => s === "RUNNING", 60_000)
    await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo finally ran"], idle_duration: 0 }, "slurm-queued") })
    const queued = await until("slurm-queued waiting in the queue", () => getRun("slurm-queued"), (r) => /^Slurm /.test(r.jobs[0].job_submissions.at(-1).status_message ?? "") || finished(r), 120_000)
    const sub = queued.jobs[0].job_submissions.at(-1)
    expect([sub.status, sub.status_message], JSON.stringify(sub)).toEqual(["provisioning", expect.stringMatching(/^Slurm PENDING \((Resources|Priority)\)$/)])
    expect(sub.job_provisioning_data).toBeUndefined()
    const client = Client.connect({ name: "main", url: "http://slurm-e2e.invalid", token: TOKEN }, { fetch: (async (input: RequestInfo | URL, init?: RequestInit) => server.app.fetch(new Request(input, init))) as typeof fetch })
    expect(await renderPs(client, false, false, true)).toMatch(/^ {2}slurm-queued-0-0\s+provisioning\s+\S+ ago\s+Slurm PENDING \((Resources|Priority)\)$/m)

    await cluster.slurm("scancel", [filler])
    const ended = await until("slurm-queued ends", () => getRun("slurm-queued"), finished, 240_000)
    expect(ended.status, JSON.stringify(ended.jobs[0].job_submissions)).toBe("done")
    // Past the queue its message is upstream's: how the job ended.
    expect(ended.jobs[0].job_submissions.at(-1).status_message).toBe("exited (0)")
    expect(await logsOf("slurm-queued")).toContain("finally ran")
  }, 600_000)

  it("a stop of a run whose Slurm job waits in the queue cancels that job at once (scancel while PENDING), and its instance is not left provisioning", async () => {
    const filler = (await cluster.slurm("sbatch", ["--parsable", "--nodes=2", "--exclusive", "--output=/dev/null", "--wrap", "srun sleep 600"])).trim()
    try {
      await until("the filler running", () => cluster.queueState(filler), (s) => s === "RUNNING", 60_000)
      await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo should never run"], idle_duration: 0 }, "slurm-stop-pending") })
      await until("slurm-stop-pending waiting in the queue", () => getRun("slurm-stop-pending"), (r) => /^Slurm /.test(r.jobs[0].job_submissions.at(-1).status_message ?? "") || finished(r), 120_000)
      // Our job: the one in the queue that is not the filler.
      const queue = async () => (await cluster.slurm("squeue", ["-h", "-o", "%i|%T"])).trim().split("\n").filter((l) => l.includes("|")).map((l) => l.split("|"))
      const ours = (await queue()).find(([id]) => id !== filler)
      expect(ours?.[1], JSON.stringify(await queue())).toBe("PENDING")
      const stopped = await call("/api/project/main/runs/stop", { runs_names: ["slurm-stop-pending"], abort: false })
      expect(stopped.status, JSON.stringify(stopped.body)).toBe(200)
      const ended = await until("slurm-stop-pending ends", () => getRun("slurm-stop-pending"), finished, 60_000)
      expect(ended.status).toBe("terminated")
      // Cancelled while the nodes are still taken: well before the backend's own start
      // timeout (120 s) would have given up on it, and without it ever running.
      await until("the pending Slurm job cancelled", () => cluster.queueState(ours![0]), (s) => s === undefined, 45_000)
      expect(await cluster.queueState(filler)).toBe("RUNNING")
      const instances = (await call("/api/instances/list", { project_names: ["main"] })).body as Array<any>
      const mine = instances.filter((i) => String(i.name).startsWith("slurm-stop-pending-"))
      expect(mine.map((i) => i.status), JSON.stringify(mine)).toEqual(["terminated"])
      expect(await logsOf("slurm-stop-pending")).not.toContain("should never run")
    } finally {
      await cluster.slurm("scancel", [filler])
    }
  }, 600_000)

  it("a task of more nodes than the cluster's partition has fails before any Slurm job is submitted, saying nodes and how many the partition has", async () => {
    const applied = await call("/api/project/main/runs/apply", { plan: runSpec({ nodes: 3, commands: ["true"] }, "slurm-wide") })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    const run = await until("slurm-wide ends", () => getRun("slurm-wide"), finished, 120_000)
    expect(run.status).toBe("failed")
    for (const job of run.jobs) {
      expect(job.job_submissions.at(-1).termination_reason_message).toContain("nodes: the task asks for 3 nodes, and partition debug of cluster netns has 2")
    }
    // Refused before sbatch: slurmctld, which keeps an ended job for MinJobAge, never had one of this run.
    expect(await cluster.slurm("scontrol", ["show", "-o", "job"])).not.toContain("JobName=dstack-slurm-wide")
  }, 180_000)

  it("runs a 2-node task as one allocation of both compute nodes whose nodes rendezvous at the master's address; a stop cancels the whole allocation", async () => {
    const plan = await call("/api/project/main/runs/get_plan", runSpec({ nodes: 2, commands: ["true"] }))
    expect(plan.body.job_plans[0].offers.map((o: any) => o.backend)).toEqual(["slurm"])
    const applied = await call("/api/project/main/runs/apply", { plan: runSpec({ nodes: 2, env: { SCRIPT: RENDEZVOUS }, commands: ['node -e "$SCRIPT"'], idle_duration: 0 }, "slurm-pair") })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    const run = await until("slurm-pair ends", () => getRun("slurm-pair"), finished, 240_000)
    expect(run.status, JSON.stringify(run.jobs.map((j: any) => j.job_submissions.at(-1)))).toBe("done")
    const pds = run.jobs.map((j: any) => j.job_submissions.at(-1).job_provisioning_data)
    // One Slurm job: the master's instance is the allocation, the other node's is named after it.
    const jobId = pds[0].instance_id
    expect(pds[1].instance_id).toBe(`${jobId}+1`)
    const ips = pds.map((pd: any) => pd.internal_ip)
    expect([...ips].sort()).toEqual(cluster.computes.map((h) => h.ip).sort())
    const saw = ips.map((ip: string, rank: number) => `${rank}@${ip}`).sort().join(",")
    for (let rank = 0; rank < 2; rank++) {
      const out = await jobLogs(run, rank)
      expect(out).toContain(`rank ${rank} of 2 master ${ips[0]} ips ${ips.join(",")} own true slurm ${jobId}`)
      expect(out).toContain(`hostfile ${ips.map((ip: string) => `${ip} slots=1`).join(";")}`)
      expect(out).toContain(`rank ${rank} saw ${saw}`)
    }
    await until("the pair's allocation cancelled", () => cluster.queueState(jobId), (s) => s === undefined, 60_000)

    await call("/api/project/main/runs/apply", { plan: runSpec({ nodes: 2, commands: ["echo up on $SLURMD_NODENAME", "sleep 600"], idle_duration: 0 }, "slurm-pair-long") })
    const running = await until("slurm-pair-long running", () => getRun("slurm-pair-long"), (r) => r.jobs.every((j: any) => j.job_submissions.at(-1).status === "running") || finished(r), 240_000)
    expect(running.status, JSON.stringify(running.jobs.map((j: any) => j.job_submissions.at(-1)))).toBe("running")
    const longId = running.jobs[0].job_submissions.at(-1).job_provisioning_data.instance_id
    expect(await cluster.slurm("scontrol", ["show", "-o", "job", longId])).toMatch(/NumNodes=2 /)
    await call("/api/project/main/runs/stop", { runs_names: ["slurm-pair-long"], abort: false })
    const ended = await until("slurm-pair-long ends", () => getRun("slurm-pair-long"), finished, 120_000)
    expect(ended.status).toBe("terminated")
    await until("the long pair's allocation gone from squeue", () => cluster.queueState(longId), (s) => s === undefined, 60_000)
  }, 600_000)

  it("a job shows pulling on its node while its runner starts in the allocation; a runner that never starts fails it within the provisioning timeout, and a stop then cancels the allocation", async () => {
    // A server whose provisioning timeout is short, on the same cluster, whose nodes' "node"
    // never starts a runner (it sleeps): the allocation runs, the runner never says where it listens.
    const dir = path.join(os.homedir(), `.dstack-ts/slurm-${cluster.net.name}`)
    fs.mkdirSync(dir, { recursive: true })
    const never = path.join(dir, "never-node")
    fs.writeFileSync(never, "#!/bin/sh\nexec sleep 600\n", { mode: 0o755 })
    const short = await createServer({
      state: EmbeddedStateStore.layerMemory(),
      blobs: blobsMemory,
      adminToken: TOKEN,
      plugins: [backendSlurm, transportSsh],
      runner: { entry: RUNNER_ENTRY },
      engine: { resyncMs: 1_000, provisioningTimeoutMs: 15_000 }
    })
    const on = appCall(() => short, TOKEN)
    const runOf = async (name: string) => (await on("/api/project/main/runs/get", { run_name: name })).body
    try {
      const created = await on("/api/project/main/backends/create", {
        type: "slurm",
        clusters: [{ name: "netns", hostname: cluster.login.ip, user: "root", private_key: { content: cluster.net.privateKey } }],
        install_dir: `.dstack-ts/slurm-${cluster.net.name}`,
        node: never
      })
      expect(created.status, JSON.stringify(created.body)).toBe(200)
      for (const name of ["slurm-never", "slurm-never-stop"]) {
        const applied = await on("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo should never run"], idle_duration: 0 }, name) })
        expect(applied.status, JSON.stringify(applied.body)).toBe(200)
      }
      // Past the queue, on its node, with no runner yet: pulling, the node's address known.
      const pulling = await Promise.all(["slurm-never", "slurm-never-stop"].map((name) =>
        until(`${name} pulling`, () => runOf(name), (r) => r.jobs[0].job_submissions.at(-1).status !== "submitted" && r.jobs[0].job_submissions.at(-1).status !== "provisioning", 60_000)))
      const jobIds: Array<string> = []
      for (const r of pulling) {
        const sub = r.jobs[0].job_submissions.at(-1)
        expect(sub.status, JSON.stringify(sub)).toBe("pulling")
        expect(cluster.computes.map((h) => h.ip)).toContain(sub.job_provisioning_data.hostname)
        expect(sub.job_provisioning_data.runner_port ?? undefined).toBeUndefined()
        jobIds.push(sub.job_provisioning_data.instance_id)
        expect(await cluster.queueState(sub.job_provisioning_data.instance_id)).toBe("RUNNING")
      }
      // A stop while the runner starts: nothing to ask a runner, the allocation is cancelled.
      const stopped = await on("/api/project/main/runs/stop", { runs_names: ["slurm-never-stop"], abort: false })
      expect(stopped.status, JSON.stringify(stopped.body)).toBe(200)
      const stoppedRun = await until("slurm-never-stop ends", () => runOf("slurm-never-stop"), finished, 60_000)
      expect([stoppedRun.status, stoppedRun.jobs[0].job_submissions.at(-1).termination_reason]).toEqual(["terminated", "terminated_by_user"])
      await until("slurm-never-stop's allocation cancelled", () => cluster.queueState(jobIds[1]), (s) => s === undefined, 60_000)
      // The other one: failed by the provisioning timeout, saying so, its allocation cancelled.
      const ended = await until("slurm-never ends", () => runOf("slurm-never"), finished, 90_000)
      const sub = ended.jobs[0].job_submissions.at(-1)
      expect([ended.status, sub.status, sub.termination_reason], JSON.stringify(sub)).toEqual(["failed", "failed", "waiting_runner_limit_exceeded"])
      expect(sub.termination_reason_message).toMatch(new RegExp(`^the runner on instance ${jobIds[0]} \\(backend slurm\\) did not start within the provisioning timeout \\(15s\\)`))
      await until("slurm-never's allocation cancelled", () => cluster.queueState(jobIds[0]), (s) => s === undefined, 60_000)
    } finally {
      await short.close()
      fs.rmSync(never, { force: true })
    }
  }, 300_000)

  it("a server restarted while a task runs reaches its runner again through the login node, and follows it to done with all its logs", async () => {
    // A server on a store that outlives it; the second start has made no backend before it
    // follows the job (a new process, as after a restart).
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-slurm-restart-"))
    const go = path.join(dir, "go")
    const start = () =>
      createServer({
        state: EmbeddedStateStore.layer({ dataDir: path.join(dir, "data") }),
        blobs: blobsMemory,
        adminToken: TOKEN,
        plugins: [backendSlurm, transportSsh],
        runner: { entry: RUNNER_ENTRY },
        engine: { resyncMs: 1_000 }
      })
    let current: Server | undefined = await start()
    const on = appCall(() => current!, TOKEN)
    const logs = async () => (await on("/api/project/main/logs/poll", { run_name: "slurm-restart" })).body.logs.map((l: any) => l.message).join("")
    const runOf = async () => (await on("/api/project/main/runs/get", { run_name: "slurm-restart" })).body
    try {
      const created = await on("/api/project/main/backends/create", {
        type: "slurm",
        clusters: [{ name: "netns", hostname: cluster.login.ip, user: "root", private_key: { content: cluster.net.privateKey } }],
        install_dir: `.dstack-ts/slurm-${cluster.net.name}`
      })
      expect(created.status, JSON.stringify(created.body)).toBe(200)
      // The job goes on only once the test says so (a file on the shared filesystem), after the restart.
      const applied = await on("/api/project/main/runs/apply", {
        plan: runSpec({ commands: ["echo before-restart", `until [ -f ${go} ]; do sleep 0.2; done`, "echo after-restart"], idle_duration: 0 }, "slurm-restart")
      })
      expect(applied.status, JSON.stringify(applied.body)).toBe(200)
      await until("slurm-restart's first line", logs, (l) => l.includes("before-restart"), 180_000)
      const jobId = (await runOf()).jobs[0].job_submissions.at(-1).job_provisioning_data.instance_id
      await current.close()
      current = undefined
      // The allocation runs on with the server gone.
      expect(await cluster.queueState(jobId)).toBe("RUNNING")
      current = await start()
      fs.writeFileSync(go, "")
      const ended = await until("slurm-restart ends", runOf, finished, 120_000)
      expect(ended.status, JSON.stringify(ended.jobs[0].job_submissions.at(-1))).toBe("done")
      const text = await logs()
      expect(text.match(/before-restart/g)).toHaveLength(1)
      expect(text.match(/after-restart/g)).toHaveLength(1)
      await until("the allocation cancelled", () => cluster.queueState(jobId), (s) => s === undefined, 60_000)
    } finally {
      await current?.close()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }, 420_000)
})
