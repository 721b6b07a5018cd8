// What the Slurm commands print, read: scontrol lines, GRES GPU counts, Slurm times, job states
// and reasons as dstack statuses and termination reasons, and offers sized from the nodes.
import { Backend, Requirements } from "@dstack-ts/core"
import { Schema } from "effect"
import { describe, expect, it } from "vitest"
import { Slurm, SlurmBackend } from "../src/index.ts"

const NODE =
  "NodeName=gpu01 Arch=x86_64 CoresPerSocket=16 CPUAlloc=0 CPUEfctv=32 CPUTot=32 CPULoad=0.01 AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:a100:4(S:0-1) NodeAddr=10.0.0.21 NodeHostName=gpu01 Version=22.05.8 OS=Linux 6.1 RealMemory=256000 AllocMem=0 FreeMem=250000 Sockets=2 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=400000 Weight=1 Owner=N/A MCS_label=N/A Partitions=gpu,all BootTime=None SlurmdStartTime=None"

const requirements = (resources: unknown) => Schema.decodeUnknownSync(Requirements)({ resources })

describe("scontrol output", () => {
  it("reads a node line: CPUs, memory, GPUs from GRES, address, partitions, state", () => {
    expect(Slurm.parseNode(NODE)).toEqual({
      name: "gpu01", address: "10.0.0.21", cpus: 32, memoryMib: 256000, tmpDiskMib: 400000, gpus: 4, arch: "x86_64", partitions: ["gpu", "all"], state: "IDLE"
    })
  })
  it("refuses a node line whose numbers are not numbers, naming the node", () => {
    expect(() => Slurm.parseNode("NodeName=x CPUTot=many RealMemory=1")).toThrow(/node x: CPUTot/)
  })
  it("counts GPUs across GRES kinds and ignores other GRES", () => {
    expect(Slurm.gresGpuCount("gpu:a100:2,gpu:v100:1(S:0),mps:100")).toBe(3)
    expect(Slurm.gresGpuCount("gpu:2")).toBe(2)
    expect(Slurm.gresGpuCount("")).toBe(0)
  })
  it("reads Slurm times in every form", () => {
    expect(Slurm.parseSlurmTime("UNLIMITED")).toBeUndefined()
    expect(Slurm.parseSlurmTime("30")).toBe(1800)
    expect(Slurm.parseSlurmTime("01:00:00")).toBe(3600)
    expect(Slurm.parseSlurmTime("1-02:00:00")).toBe(93600)
    expect(Slurm.parsePartition("PartitionName=debug AllowGroups=ALL Default=YES MaxTime=01:00:00 State=UP")).toEqual({ name: "debug", maxTimeSeconds: 3600, up: true, isDefault: true })
    expect(Slurm.parsePartition("PartitionName=big MaxNodes=4 MaxTime=UNLIMITED TotalNodes=16 State=UP")).toEqual({ name: "big", up: true, isDefault: false, totalNodes: 16, maxNodes: 4 })
    expect(Slurm.parsePartition("PartitionName=any MaxNodes=UNLIMITED TotalNodes=2 State=UP").maxNodes).toBeUndefined()
  })
  it("rounds --time up to whole minutes", () => {
    expect(Slurm.slurmTimeLimit(90)).toBe("2")
    expect(Slurm.slurmTimeLimit(5)).toBe("1")
    expect(Slurm.slurmTimeLimit(3600)).toBe("60")
  })
})

describe("Slurm states as dstack sees them", () => {
  it("PENDING is provisioning with Slurm's reason", () => {
    expect(Slurm.stateMeaning("PENDING", "Resources")).toEqual({ status: "provisioning", message: "Slurm PENDING (Resources)" })
    expect(Slurm.stateMeaning("PENDING", "Priority").message).toBe("Slurm PENDING (Priority)")
  })
  it.each([
    ["TIMEOUT", "terminated", "max_duration_exceeded"],
    ["PREEMPTED", "failed", "interrupted_by_no_capacity"],
    ["NODE_FAIL", "failed", "instance_unreachable"],
    ["OUT_OF_MEMORY", "failed", "container_exited_with_error"],
    ["CANCELLED", "terminated", "terminated_by_user"],
    ["COMPLETED", "done", "done_by_runner"]
  ] as const)("%s ends the job %s (%s)", (state, status, reason) => {
    expect(Slurm.stateMeaning(state)).toMatchObject({ status, terminationReason: reason })
  })
  it("reads `CANCELLED by 0` as CANCELLED", () => {
    expect(Slurm.stateMeaning("CANCELLED by 0").terminationReason).toBe("terminated_by_user")
  })
})

describe("offers", () => {
  const cluster = Schema.decodeUnknownSync(SlurmBackend.SlurmClusterConfig)({
    name: "hpc", hostname: "login", user: "me", private_key: { content: "k" }, gpu_partitions: [{ gpu: "A100:80GB", partitions: ["gpu"] }]
  })
  const partitions = [Slurm.parsePartition("PartitionName=gpu MaxTime=UNLIMITED State=UP"), Slurm.parsePartition("PartitionName=all MaxTime=60 State=UP")]
  const nodes = [Slurm.parseNode(NODE)]

  it("sizes an offer to the job's minimums in the partitions it may use", () => {
    const offers = SlurmBackend.clusterOffers(cluster, partitions, nodes, requirements({ cpu: 4, memory: "16GB", gpu: 0, disk: "10GB" }))
    expect(offers.map((o) => [o.availabilityZones, o.instance.resources.cpus, o.instance.resources.memoryMib])).toEqual([[["all"], 4, 16384]])
  })
  it("offers GPU jobs only gpu_partitions, with the GPU model configured there", () => {
    const offers = SlurmBackend.clusterOffers(cluster, partitions, nodes, requirements({ cpu: 4, memory: "16GB", gpu: 2, disk: "10GB" }))
    expect(offers).toHaveLength(1)
    expect(offers[0].availabilityZones).toEqual(["gpu"])
    expect(offers[0].instance.resources.gpus.map((g) => [g.name, g.memoryMib])).toEqual([["A100", 81920], ["A100", 81920]])
  })
  it("caps an offer at the node for a job too big, so the plan says what it lacks", () => {
    const r = requirements({ cpu: 64, memory: "16GB", disk: "10GB" })
    const offers = SlurmBackend.clusterOffers(cluster, partitions, nodes, r)
    expect(offers[0].instance.resources.cpus).toBe(32)
    expect(Backend.filterOffers(offers, r).excluded[0].reasons.join("; ")).toMatch(/cpu/)
  })
})

describe("the batch script", () => {
  it("asks for the offer's size, the time limit from max_duration, account and QoS, and starts node 0's runner in the batch script itself", () => {
    const offer = SlurmBackend.clusterOffers(
      Schema.decodeUnknownSync(SlurmBackend.SlurmClusterConfig)({ name: "hpc", hostname: "login", user: "me", private_key: { content: "k" }, gpu_partitions: [{ gpu: "A100", partitions: ["gpu"] }] }),
      [Slurm.parsePartition("PartitionName=gpu MaxTime=UNLIMITED State=UP")],
      [Slurm.parseNode(NODE)],
      requirements({ cpu: 4, memory: "16GB", gpu: 2, disk: "10GB" })
    )[0]
    const script = SlurmBackend.batchScript({
      jobName: "dstack-x", dir: "/home/me/.dstack-ts/slurm", partition: "gpu", nodes: 1, resources: offer.instance.resources,
      node: "node", bundle: "/home/me/r.mjs", needsDocker: true, timeLimitSeconds: 150, account: "proj", qos: "high"
    })
    for (const d of ["--partition=gpu", "--nodes=1", "--cpus-per-task=4", "--mem=16384M", "--gres=gpu:2", "--time=3", "--account=proj", "--qos=high", "--no-requeue"]) {
      expect(script).toContain(`#SBATCH ${d}\n`)
    }
    expect(script).toMatch(/--port 0/)
    expect(script).toContain("no Docker on")
    // One node: no step launch between the allocation and the runner.
    expect(script).not.toContain("srun")
    expect(script.trim().split("\n").at(-1)).toBe(`DSTACK_TS_RANK_BASE=0 sh -c "$step"`)
  })
  it("starts the other nodes' runners in one srun step beside node 0's, ranked from 1", () => {
    const resources = SlurmBackend.clusterOffers(
      Schema.decodeUnknownSync(SlurmBackend.SlurmClusterConfig)({ name: "hpc", hostname: "login", user: "me", private_key: { content: "k" } }),
      [Slurm.parsePartition("PartitionName=cpu MaxTime=UNLIMITED State=UP")],
      [Slurm.parseNode(NODE.replace("Partitions=gpu,all", "Partitions=cpu"))],
      requirements({ cpu: 1, memory: "1GB" })
    )[0].instance.resources
    const script = SlurmBackend.batchScript({ jobName: "dstack-x", dir: "/d", partition: "cpu", nodes: 3, resources, node: "node", bundle: "/r.mjs", needsDocker: false })
    expect(script).toContain(`DSTACK_TS_RANK_BASE=1 srun --relative=1 --nodes=2 --ntasks=2 --ntasks-per-node=1 --kill-on-bad-exit=0 sh -c "$step" &\n`)
    expect(script).not.toContain("docker")
  })
})

describe("the submission script", () => {
  it("carries the batch script to sbatch in a quoted here-document, unchanged", () => {
    const batch = "#!/bin/sh\n#SBATCH --nodes=1\necho '$HOME' \"$x\"\n"
    const script = SlurmBackend.submissionScript(batch)
    expect(script).toContain(`<<'DSTACK_TS_BATCH_SCRIPT'\n${batch}DSTACK_TS_BATCH_SCRIPT\n)`)
  })
  it("refuses a batch script holding its here-document's delimiter", () => {
    expect(() => SlurmBackend.submissionScript("#!/bin/sh\nDSTACK_TS_BATCH_SCRIPT\n")).toThrow(/DSTACK_TS_BATCH_SCRIPT/)
  })
})
