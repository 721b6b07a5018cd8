// The test Slurm cluster itself (test/support/slurmCluster.ts): real slurmctld and slurmd on netns
// hosts, nodes idle, a 2-node job runs a step on each node's own address, and a login over SSH
// has the Slurm client configured.
import { afterAll, beforeAll, expect, it } from "vitest"
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { createSlurmCluster, describeWithSlurm, type SlurmCluster } from "../support/slurm.ts"

const run = promisify(execFile)

describeWithSlurm(() => {
  let cluster: SlurmCluster
  beforeAll(async () => {
    cluster = await createSlurmCluster({ nodes: 2 })
  }, 90_000)
  afterAll(async () => {
    await cluster?.down()
  })

  it("shows both compute nodes idle in the default partition", async () => {
    const out = await cluster.slurm("sinfo", ["-h", "-N", "-o", "%N %P %T %c %m"])
    expect(out.trim().split("\n").sort()).toEqual(["n1 debug* idle 2 2048", "n2 debug* idle 2 2048"])
  })

  it("runs a 2-node job with one step on each node's address", async () => {
    const out = `${cluster.dir}/two-nodes.out`
    const id = (await cluster.slurm("sbatch", ["--parsable", "-N2", "--time=1", `--output=${out}`, "--wrap", "srun sh -c 'echo $SLURMD_NODENAME $(hostname -I)'"])).trim()
    expect(id).toMatch(/^\d+$/)
    for (let i = 0; i < 100 && (await cluster.queueState(id)) !== undefined; i++) await new Promise((r) => setTimeout(r, 200))
    expect(await cluster.queueState(id)).toBeUndefined()
    const { readFileSync } = await import("node:fs")
    const lines = readFileSync(out, "utf8").trim().split("\n").map((l) => l.trim()).sort()
    expect(lines).toEqual(cluster.computes.map((c) => `${c.nodeName} ${c.ip}`))
  })

  it("gives an SSH login on the login node a working Slurm client", async () => {
    const { stdout } = await run("ssh", [
      "-i", cluster.net.privateKeyFile, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
      `root@${cluster.login.ip}`, "sinfo -h -o %D"
    ])
    expect(stdout.trim()).toBe("2")
  })
})
