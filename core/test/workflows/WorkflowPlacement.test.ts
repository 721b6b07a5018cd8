// Whether a workflow's multi-node job could ever be placed: a cluster fleet with enough fitting
// instances or a backend that creates instance groups places it; otherwise the message says
// what the project has and why each backend cannot.
import { describe, expect, it } from "vitest"
import { Effect } from "effect"
import { clusterProblem } from "../../src/workflows/WorkflowPlacement.ts"

const local = { type: "local" }
const remote = { type: "remote", remoteHosts: {} as any }
const slurm = { type: "slurm", createInstanceGroup: () => Effect.succeed([]) }
const fleet = (name: string, instances: number, fitting: number, misfits: Array<string> = []) => ({ name, instances, fitting, misfits })

describe("clusterProblem", () => {
  it("places on a cluster fleet with enough fitting instances, busy or not, or on a backend that creates groups", () => {
    expect(clusterProblem(2, [fleet("pair", 2, 2)], [local])).toBeUndefined()
    expect(clusterProblem(3, [fleet("pair", 2, 2), fleet("trio", 3, 3)], [])).toBeUndefined()
    expect(clusterProblem(8, [], [local, slurm])).toBeUndefined()
  })

  it("says the project has no cluster fleet and why each backend cannot create the nodes together", () => {
    expect(clusterProblem(2, [], [local, remote])).toBe(
      "nodes: 2 needs 2 instances of one placement: cluster fleet, or a backend that creates a job's instances together: " +
        "the project has no placement: cluster fleet, and its backends cannot create the nodes together (" +
        "local: it makes one instance at a time, with no guarantee that they reach each other (it has no instance group); " +
        "remote: hosts you bring take a multi-node job only as a placement: cluster fleet); " +
        "add hosts to a fleet with placement: cluster (ssh_config), or ask for fewer nodes"
    )
    expect(clusterProblem(2, [], [])).toContain("the project has no placement: cluster fleet, and no backend of the project creates a group of instances")
  })

  it("names the largest cluster fleet, how many of its instances fit and why the others do not", () => {
    expect(clusterProblem(3, [fleet("small", 1, 1), fleet("pair", 2, 2)], [])).toContain("the largest placement: cluster fleet, pair, has 2 instances that fit, and")
    expect(clusterProblem(2, [fleet("gpu", 3, 1, ["gpu: needs 1× GPU, instance has 0 GPUs", "memory: x"])], [])).toContain(
      "the largest placement: cluster fleet, gpu, has 1 instance that fits (of 3; the others: gpu: needs 1× GPU, instance has 0 GPUs; memory: x)"
    )
  })
})
