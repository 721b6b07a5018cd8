// From a run spec to the job specs a runner executes.
import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { JobSpec } from "../../../src/domain/Job.ts"
import { RunSpec } from "../../../src/domain/Run.ts"
import { clusterEnv, jobSpecsFromRunSpec, splitShellWords } from "../../../src/domain/RunJobSpecs.ts"

const runSpec = (configuration: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  Schema.decodeUnknownSync(RunSpec)({
    run_name: "train",
    repo_id: "repo-1",
    repo_data: { repo_type: "local", repo_dir: "/home/me/project" },
    repo_code_hash: "h1",
    configuration,
    ...extra
  })

describe("jobSpecsFromRunSpec", () => {
  it("a task with nodes: 3 gives three jobs of one replica with ranks and DSTACK_* variables", () => {
    const specs = jobSpecsFromRunSpec(runSpec({
      type: "task",
      nodes: 3,
      commands: ["echo start", "torchrun train.py"],
      env: { LR: "0.1", DSTACK_NODE_RANK: "user value loses" },
      resources: { gpu: "A100:2" },
      max_duration: "2h",
      retry: true,
      spot_policy: "spot",
      max_price: 4.5
    }))
    expect(specs.map((s) => [s.jobName, s.replicaNum, s.jobNum, s.jobsPerReplica])).toEqual([
      ["train-0-0", 0, 0, 3],
      ["train-1-0", 0, 1, 3],
      ["train-2-0", 0, 2, 3]
    ])
    expect(specs[2].commands).toEqual(["echo start", "torchrun train.py"])
    expect(specs[2].env).toEqual({
      LR: "0.1",
      DSTACK_RUN_NAME: "train",
      DSTACK_REPO_ID: "repo-1",
      DSTACK_NODES_NUM: "3",
      DSTACK_NODE_RANK: "2",
      DSTACK_GPUS_PER_NODE: "2",
      DSTACK_GPUS_NUM: "6"
    })
    expect(specs[0].maxDuration).toBe(7200)
    expect(specs[0].retry?.onEvents).toEqual(["no-capacity", "interruption", "error"])
    expect(specs[0].retry?.duration).toBe(3600)
    expect(specs[0].requirements.spot).toBe(true)
    expect(specs[0].requirements.maxPrice).toBe(4.5)
    expect(specs[0].imageName).toBeUndefined() // no image: runs as processes on the host
    expect(specs[0].repoData).toEqual({ repoType: "local", repoDir: "/home/me/project" })
    expect(specs[0].repoCodeHash).toBe("h1")
  })

  it("a service gives one job per replica, with its port; the replica count can be overridden", () => {
    const spec = runSpec({ type: "service", port: 8000, commands: ["python app.py"], replicas: 2, image: "python:3.12" })
    const specs = jobSpecsFromRunSpec(spec)
    expect(specs.map((s) => [s.jobName, s.replicaNum, s.jobNum, s.jobsPerReplica])).toEqual([
      ["train-0-0", 0, 0, 1],
      ["train-0-1", 1, 0, 1]
    ])
    expect(specs[1].servicePort).toBe(8000)
    expect(specs[1].imageName).toBe("python:3.12")
    expect(specs[1].env.DSTACK_NODES_NUM).toBe("1")
    expect(jobSpecsFromRunSpec(spec, { replicas: 4 })).toHaveLength(4)
  })

  it("a task's defaults: one node, on-demand, no retry, no time limit, ports as app specs", () => {
    const specs = jobSpecsFromRunSpec(runSpec({ type: "task", commands: ["python train.py"], ports: ["8080:80", 6006], entrypoint: "/bin/sh -c 'echo \"hi there\"'" }))
    expect(specs).toHaveLength(1)
    const [spec] = specs
    expect(spec.requirements.spot).toBe(false)
    expect(spec.retry).toBeUndefined()
    expect(spec.maxDuration).toBeNull()
    expect(spec.stopDuration).toBe(300)
    expect(spec.env.DSTACK_GPUS_NUM).toBe("0")
    expect(spec.appSpecs.map((a) => [a.port, a.mapToPort])).toEqual([[80, 8080], [6006, 6006]])
    expect(spec.entrypoint).toEqual(["/bin/sh", "-c", "echo \"hi there\""])
    // The job spec is valid wire data for the runner.
    const wire = Schema.encodeSync(JobSpec)(spec)
    expect(Schema.decodeUnknownSync(JobSpec)(JSON.parse(JSON.stringify(wire)))).toEqual(spec)
  })

  it("a dev environment runs its init commands, then stays up", () => {
    const [spec] = jobSpecsFromRunSpec(runSpec({ type: "dev-environment", init: ["pip install -r req.txt"] }))
    expect(spec.commands).toEqual(["pip install -r req.txt", "sleep infinity"])
  })

  it("a dev environment with an IDE prints its remote-SSH link after init, as upstream", () => {
    const [spec] = jobSpecsFromRunSpec(runSpec({ type: "dev-environment", name: "dev", ide: "cursor", init: ["pip install -r req.txt"] }))
    expect(spec.commands[0]).toBe("pip install -r req.txt")
    expect(spec.commands[1]).toContain(`"  cursor://vscode-remote/ssh-remote+train$PWD"`)
    expect(spec.commands.at(-1)).toBe("sleep infinity")
  })

  it("the run spec's working dir wins over the configuration's; max_duration off is no limit", () => {
    const [spec] = jobSpecsFromRunSpec(runSpec({ type: "task", commands: ["ls"], working_dir: "src", max_duration: "off" }, { working_dir: "app" }))
    expect(spec.workingDir).toBe("app")
    expect(spec.maxDuration).toBeNull()
  })
})

describe("clusterEnv", () => {
  it("names the master, all nodes, and the real GPU numbers", () => {
    expect(clusterEnv({ nodesIps: ["10.0.0.1", "10.0.0.2"], gpusPerNode: 8 })).toEqual({
      DSTACK_MASTER_NODE_IP: "10.0.0.1",
      DSTACK_NODES_IPS: "10.0.0.1\n10.0.0.2",
      DSTACK_NODES_NUM: "2",
      DSTACK_GPUS_PER_NODE: "8",
      DSTACK_GPUS_NUM: "16"
    })
  })
})

describe("splitShellWords", () => {
  it("splits like a shell", () => {
    expect(splitShellWords("  python -m  http.server ")).toEqual(["python", "-m", "http.server"])
    expect(splitShellWords("a 'b c' \"d \\\"e\\\"\" f\\ g ''")).toEqual(["a", "b c", "d \"e\"", "f g", ""])
    expect(splitShellWords("")).toEqual([])
  })
})
