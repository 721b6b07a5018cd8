// The slurm backend against a real Slurm cluster (slurm-wlm on netns hosts, test/support/slurm.ts):
// offers from the cluster's nodes, an allocation whose step runs the runner that answers over
// SSH through the login node, --time from max_duration, scancel on terminate, a job too big
// for the partition refused by the plan, an image job refused on nodes without Docker, a job of
// more nodes than the partition has refused before sbatch, and the runner started from the
// startup snapshot the node made of its bundle.
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Backend, type JobProvisioningData, JobSpec, Requirements, RunnerLaunch } from "@dstack-ts/core"
import { httpStatusOnHost, openSession } from "@dstack-ts/ssh"
import { testBackend } from "@dstack-ts/core/testing"
import { Effect, Layer, Schema, Scope } from "effect"
import { afterAll, beforeAll, expect, it, vi } from "vitest"
import { createSlurmCluster, describeWithSlurm, type SlurmCluster } from "../../../test/support/slurm.ts"
import plugin, { SlurmBackend } from "../src/index.ts"

/** What the engine tells a backend of a job (Backend.InstanceJob), from a job spec as the API writes it. */
const instanceJob = (wire: Record<string, unknown>) => {
  const spec = Schema.decodeUnknownSync(JobSpec)(wire)
  return {
    jobName: spec.jobName,
    requirements: spec.requirements,
    ...(spec.imageName ? { image: spec.imageName } : {}),
    ...(spec.maxDuration === null ? {} : { maxDuration: spec.maxDuration })
  }
}

const RUNNER_ENTRY = fileURLToPath(new URL("../../../cli/src/runner.ts", import.meta.url))

// An allocation starts Node.js on the node: slow on a loaded 2-core machine (the conformance suite takes the default timeout).
vi.setConfig({ testTimeout: 120_000 })

const requirements = (resources: unknown) => Schema.decodeUnknownSync(Requirements)({ resources })
const small = { cpu: 1, memory: "0.5GB", disk: "1GB.." }

describeWithSlurm(() => {
  let cluster: SlurmCluster
  let scope: Scope.CloseableScope
  let backend: SlurmBackend.SlurmBackend
  let bundleDir: string
  let bundleFile: string
  const run = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>) => Effect.runPromise(Scope.extend(effect, scope))
  /** As the engine does: asks until the runner started in the allocation is up (each call waits up to 5 s on the login node). */
  const readyOf = async (pd: JobProvisioningData) => {
    for (let i = 0; i < 24; i++) {
      const up = await run(backend.updateProvisioningData(pd))
      if (up !== undefined) return up
    }
    throw new Error(`the runner of Slurm job ${pd.instanceId} did not start`)
  }

  beforeAll(async () => {
    bundleDir = fs.mkdtempSync(path.join(os.tmpdir(), "slurm-bundle-"))
    const [c, bundle] = await Promise.all([
      createSlurmCluster({ nodes: 2, partitions: [{ name: "debug", default: true, maxTimeMinutes: 30 }] }),
      RunnerLaunch.bundleRunner(RUNNER_ENTRY, bundleDir, { snapshot: true })
    ])
    cluster = c
    bundleFile = bundle.file
    scope = Effect.runSync(Scope.make())
    backend = await run(SlurmBackend.make({
      clusters: [Schema.decodeUnknownSync(SlurmBackend.SlurmClusterConfig)({
        name: "test", hostname: cluster.login.ip, user: "root", private_key: { content: cluster.net.privateKey }
      })],
      runnerEntry: bundle.file,
      installDir: `.dstack-ts/slurm-${cluster.net.name}`
    }))
  }, 120_000)
  afterAll(async () => {
    if (scope) await Effect.runPromise(Scope.close(scope, Effect.void as never))
    await cluster?.down()
    if (bundleDir) fs.rmSync(bundleDir, { recursive: true, force: true })
    if (cluster) fs.rmSync(path.join(os.homedir(), `.dstack-ts/slurm-${cluster.net.name}`), { recursive: true, force: true })
  })

  // The conformance suite, on the same cluster (the backend is made when its tests start).
  testBackend(
    "slurm (real cluster)",
    Layer.scoped(Backend.Backend, Effect.suspend(() =>
      SlurmBackend.make({
        clusters: [Schema.decodeUnknownSync(SlurmBackend.SlurmClusterConfig)({ name: "test", hostname: cluster.login.ip, user: "root", private_key: { content: cluster.net.privateKey } })],
        runnerEntry: bundleFile,
        installDir: `.dstack-ts/slurm-${cluster.net.name}`
      })
    )),
    { requirements: requirements(small) }
  )

  it("is the plugin's `slurm` backend", () => {
    expect(Object.keys(plugin.backends ?? {})).toEqual(["slurm"])
  })

  it("offers the partition's nodes sized to the job, and excludes a job too big for any partition saying why", async () => {
    const fits = await run(backend.getOffers(requirements(small)))
    expect(fits.offers.map((o) => [o.region, o.availabilityZones, o.instance.resources.cpus, o.instance.resources.memoryMib])).toEqual([["test", ["debug"], 1, 512]])
    const big = await run(backend.getOffers(requirements({ cpu: 64, memory: "1GB", disk: "1GB.." })))
    expect(big.offers).toEqual([])
    expect(big.excluded[0].reasons.join("; ")).toMatch(/cpu/)
  })

  it("runs an allocation whose runner answers through the login node, with --time from max_duration, and scancel ends it", async () => {
    const offer = (await run(backend.getOffers(requirements(small)))).offers[0]
    const job = instanceJob({ job_name: "t-0-0", commands: ["true"], max_duration: 150, requirements: { resources: small } })
    const allocated = await run(backend.createInstance(offer, { projectName: "main", instanceName: "t-0-0-abcd", instanceId: "i-1", sshKeys: [], job }))
    // Answered once the allocation runs, its node known: the runner starts in it meanwhile.
    expect(allocated.backend).toBe("slurm")
    expect(cluster.computes.map((c) => c.ip)).toContain(allocated.hostname)
    expect(allocated.runnerPort).toBeUndefined()
    expect(await cluster.queueState(allocated.instanceId)).toBe("RUNNING")
    const pd = await readyOf(allocated)
    expect([pd.instanceId, pd.hostname, pd.runnerPort === undefined]).toEqual([allocated.instanceId, allocated.hostname, false])
    // Complete data is answered as it is.
    expect(await run(backend.updateProvisioningData(pd))).toBe(pd)
    const shown = await cluster.slurm("scontrol", ["show", "-o", "job", pd.instanceId])
    expect(shown).toMatch(/TimeLimit=00:03:00/)
    expect(shown).toMatch(/NumCPUs=1 /)
    expect(shown).toMatch(/JobName=dstack-t-0-0-abcd/)

    const access = backend.runnerAccess(pd)!
    expect(access.proxyJump?.hostname).toBe(cluster.login.ip)
    const session = await openSession(
      { hostname: pd.hostname!, port: access.port ?? 22, user: access.user, privateKey: access.privateKey, proxyJump: { ...access.proxyJump!, port: access.proxyJump!.port ?? 22 } },
      { readyTimeoutMs: 10_000, keepaliveIntervalMs: 0, keepaliveCountMax: 3 }
    )
    try {
      expect(await httpStatusOnHost(session, pd.runnerPort!, "/api/healthcheck")).toBe(200)
    } finally {
      session.close()
    }
    expect((await run(backend.jobState(pd)))?.status).toBe("running")

    await run(backend.terminateInstance(pd.instanceId, pd.region, pd.backendData))
    for (let i = 0; i < 100 && (await cluster.queueState(pd.instanceId)) !== undefined; i++) await new Promise((r) => setTimeout(r, 200))
    expect(await cluster.queueState(pd.instanceId)).toBeUndefined()
    // Terminating again (a gone job) is not an error.
    await run(backend.terminateInstance(pd.instanceId, pd.region, pd.backendData))
  }, 90_000)

  it("refuses a job with an image on nodes without Docker: the runner's start in the allocation fails saying so", async () => {
    // The nodes share this machine's Docker: the step finds it when `docker info` answers here.
    const docker = fs.existsSync("/var/run/docker.sock") && spawnSync("docker", ["info"], { stdio: "ignore", timeout: 20_000 }).status === 0
    const offer = (await run(backend.getOffers(requirements(small)))).offers[0]
    const job = instanceJob({ job_name: "img-0-0", image_name: "busybox", requirements: { resources: small } })
    if (docker) {
      // Docker answers on this machine, so the nodes (sharing it) have it: the allocation starts.
      const pd = await run(backend.createInstance(offer, { projectName: "main", instanceName: "img", instanceId: "i-2", sshKeys: [], job }))
      await readyOf(pd)
      await run(backend.terminateInstance(pd.instanceId, pd.region))
      return
    }
    const pd = await run(backend.createInstance(offer, { projectName: "main", instanceName: "img", instanceId: "i-2", sshKeys: [], job }))
    try {
      let error: Backend.BackendError | undefined
      for (let i = 0; i < 24 && error === undefined; i++) {
        const answer = await run(Effect.either(backend.updateProvisioningData(pd)))
        if (answer._tag === "Left") error = answer.left
        else expect(answer.right).toBeUndefined()
      }
      expect([error?.reason, error?.message]).toEqual(["Invalid", expect.stringMatching(/no Docker on n\d/)])
    } finally {
      await run(backend.terminateInstance(pd.instanceId, pd.region))
    }
  }, 60_000)

  it("a job whose server loses the login node while the job pends is cancelled by the watch on the login node itself", async () => {
    const filler = (await cluster.slurm("sbatch", ["--parsable", "--nodes=2", "--exclusive", "--output=/dev/null", "--wrap", "srun sleep 600"])).trim()
    try {
      for (let i = 0; i < 150 && (await cluster.queueState(filler)) !== "RUNNING"; i++) await new Promise((r) => setTimeout(r, 200))
      const offer = (await run(backend.getOffers(requirements(small)))).offers[0]
      const job = instanceJob({ job_name: "cut-0-0", requirements: { resources: small } })
      const pending: Array<string> = []
      const creating = run(Effect.flip(backend.createInstance(offer, {
        projectName: "main", instanceName: "cut", instanceId: "i-4", sshKeys: [], job, onPending: (m) => Effect.sync(() => void pending.push(m))
      })))
      const ours = async () => (await cluster.slurm("squeue", ["-h", "-n", "dstack-cut", "-o", "%i|%T"])).trim()
      for (let i = 0; i < 150 && !(await ours()).endsWith("|PENDING"); i++) await new Promise((r) => setTimeout(r, 200))
      expect(await ours()).toMatch(/^\d+\|PENDING$/)
      // The login node's sshd goes away with its sessions: the server can neither watch nor
      // cancel the job, so only the script on the login node can.
      await cluster.net.stopSshd(cluster.login)
      try {
        const error = await creating
        expect(error).toBeInstanceOf(Backend.BackendError)
        expect(pending[0]).toMatch(/^Slurm PENDING \((Resources|Priority)\)$/)
        for (let i = 0; i < 50 && (await ours()) !== ""; i++) await new Promise((r) => setTimeout(r, 200))
        expect(await ours()).toBe("")
      } finally {
        await cluster.net.startSshd(cluster.login)
      }
    } finally {
      await cluster.slurm("scancel", [filler])
      for (let i = 0; i < 100 && (await cluster.queueState(filler)) !== undefined; i++) await new Promise((r) => setTimeout(r, 200))
    }
  }, 90_000)

  it("starts the runner from a startup snapshot the node made of the bundle, once there is one", async () => {
    const dir = path.join(os.homedir(), `.dstack-ts/slurm-${cluster.net.name}`)
    const offer = (await run(backend.getOffers(requirements(small)))).offers[0]
    const allocation = (name: string) => run(backend.createInstance(offer, { projectName: "main", instanceName: name, instanceId: name, sshKeys: [], job: instanceJob({ job_name: name, requirements: { resources: small } }) }))
    const blob = () => fs.readdirSync(dir).find((f) => /^runner-[0-9a-f]{16}\.cjs\..+\.blob$/.test(f))
    // An earlier allocation may have made it; else this one does, in the background, while it runs.
    const first = await allocation("snap-a")
    // A minute for the build to begin and end; longer while its lock says it is under way (a
    // busy machine: it took over a minute with a CPU-bound process beside the suite).
    const building = () => fs.readdirSync(dir).some((f) => /^runner-[0-9a-f]{16}\.cjs\..+\.blob\.lock$/.test(f))
    for (let i = 0; blob() === undefined && (i < 600 || (i < 2400 && building())); i++) await new Promise((r) => setTimeout(r, 100))
    await run(backend.terminateInstance(first.instanceId, first.region))
    expect(blob(), `${dir}: ${fs.readdirSync(dir).join(", ")}`).toBeDefined()
    const second = await allocation("snap-b")
    try {
      await readyOf(second)
      expect(fs.readFileSync(path.join(dir, `${second.instanceId}.0.out`), "utf8")).toContain(`dstack-ts: snapshot: starting from ${dir}/${blob()}`)
      expect(await cluster.queueState(second.instanceId)).toBe("RUNNING")
    } finally {
      await run(backend.terminateInstance(second.instanceId, second.region))
    }
  }, 360_000)

  it("refuses a multi-node job of more nodes than the partition has before submitting, naming nodes and the partition's node count", async () => {
    const offer = (await run(backend.getOffers(requirements(small)))).offers[0]
    const job = { ...instanceJob({ job_name: "wide-0-0", requirements: { resources: small } }), nodes: 3 }
    const configs = [0, 1, 2].map((rank) => ({ projectName: "main", instanceName: `wide-0-${rank}`, instanceId: `i-w${rank}`, sshKeys: [], job }))
    const error = await run(Effect.flip(backend.createInstanceGroup!(offer, configs)))
    expect(error).toBeInstanceOf(Backend.BackendError)
    expect(error.reason).toBe("Invalid")
    expect(error.message).toBe("nodes: the task asks for 3 nodes, and partition debug of cluster test has 2")
    expect((await cluster.slurm("squeue", ["-h", "-n", "dstack-wide-0-0", "-o", "%i"])).trim()).toBe("")
  }, 120_000)

  it("refuses a max_duration longer than the partition's MaxTime before submitting", async () => {
    const offer = (await run(backend.getOffers(requirements(small)))).offers[0]
    const job = instanceJob({ job_name: "long-0-0", max_duration: 7200, requirements: { resources: small } })
    const error = await run(Effect.flip(backend.createInstance(offer, { projectName: "main", instanceName: "long", instanceId: "i-3", sshKeys: [], job })))
    expect(error).toBeInstanceOf(Backend.BackendError)
    expect(error.message).toBe("max_duration 7200s is longer than the time limit of partition debug on test (MaxTime 1800s)")
    expect((await cluster.slurm("squeue", ["-h", "-n", "dstack-long", "-o", "%i"])).trim()).toBe("")
  }, 60_000)
})
