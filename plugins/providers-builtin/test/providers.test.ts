// The built-in providers: core's Provider conformance suite for each and the jobs they make
// (torchrun's: one multi-node job whose nodes launch with their rank from the engine's env).
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { testProvider } from "@dstack-ts/core/testing"
import { Workflows } from "@dstack-ts/core"
import plugin, { bash, curl, docker, python, shellQuote, TORCHRUN_MASTER_PORT, torchrun } from "../src/index.ts"

const ctx = { workflowName: "test" }

testProvider(bash, { valid: [{ commands: ["echo hi"] }, { commands: ["x"], image: "busybox", environment: { A: 1 } }], invalid: [[{}, "commands"], [{ commands: [] }, "commands"]] })
testProvider(python, { valid: [{ script: "train.py" }, { script: "t.py", args: ["--a", "b c"], version: "3.11", requirements: "r.txt" }], invalid: [[{ args: "x" }, "script"], [{ script: "t.py", version: "2.7" }, "version"]] })
testProvider(docker, { valid: [{ image: "busybox", commands: ["true"] }], invalid: [[{ commands: ["true"] }, "image"]] })
testProvider(torchrun, {
  valid: [{ script: "train.py" }, { script: "t.py", args: ["--epochs", "2"], nodes: 4, version: "3.11", requirements: "r.txt", master_port: 12345, resources: { gpu: "A100:8" } }],
  invalid: [[{ nodes: 2 }, "script"], [{ script: "t.py", nodes: 0 }, "nodes"], [{ script: "t.py", nodes: 1.5 }, "nodes"], [{ script: "t.py", master_port: 70000 }, "master_port"]]
})
testProvider(curl, { valid: [{ url: "http://x/y", output: "data/y" }], invalid: [[{ url: "http://x" }, "output"]] })

describe("built-in providers", () => {
  it("are one plugin contributing five providers", () => {
    expect(Object.keys(plugin.providers ?? {}).sort()).toEqual(["bash", "curl", "docker", "python", "torchrun"])
  })

  it.effect("python installs the requirements, then runs the script with quoted args on the host's Python", () =>
    Effect.gen(function*() {
      const [job] = yield* python.createJobs({ script: "train.py", args: ["--name", "it's"], requirements: "req.txt", version: "3.11" }, ctx)
      expect(job.commands).toEqual([`"$(python3 -c 'import sys; print(sys.executable)')" -m pip install --quiet -r req.txt`, "python3 train.py --name 'it'\\''s'"])
      expect(job.python).toBe("3.11")
    }))

  it.effect("curl downloads to the output, making its folder", () =>
    Effect.gen(function*() {
      const [job] = yield* curl.createJobs({ url: "http://h/a b", output: "data/in.txt", resources: { cpu: "1.." } }, ctx)
      expect(job.commands).toEqual([`mkdir -p "$(dirname data/in.txt)"`, "curl -fsSL 'http://h/a b' -o data/in.txt"])
      expect(job.resources?.cpu).toEqual({ count: { min: 1 } })
    }))

  it.effect("docker runs in the image with the environment as strings", () =>
    Effect.gen(function*() {
      const [job] = yield* docker.createJobs({ image: "busybox", commands: ["env"], environment: { N: 2, B: true }, ports: [8080], working_dir: "src" }, ctx)
      expect(job).toEqual({ image: "busybox", commands: ["env"], env: { N: "2", B: "true" }, ports: [8080], workingDir: "src" })
    }))

  it.effect("torchrun makes one job of N nodes, each launching torchrun with its rank, the master's address and one process per GPU", () =>
    Effect.gen(function*() {
      const jobs = yield* torchrun.createJobs({ script: "train.py", args: ["--lr", "it's"], nodes: 2, requirements: "req.txt", version: "3.12", resources: { gpu: "2" }, environment: { NCCL_DEBUG: "INFO" } }, ctx)
      expect(jobs).toHaveLength(1)
      const [job] = jobs
      expect(job.nodes).toBe(2)
      expect(job.python).toBe("3.12")
      expect(job.env).toEqual({ NCCL_DEBUG: "INFO" })
      expect(job.resources?.gpu?.count).toEqual({ min: 2, max: 2 })
      expect(job.commands).toEqual([
        `"$(python3 -c 'import sys; print(sys.executable)')" -m pip install --quiet -r req.txt`,
        "torchrun --nnodes=2 --node_rank=$DSTACK_NODE_RANK --nproc_per_node=$(( ${DSTACK_GPUS_PER_NODE:-0} > 0 ? DSTACK_GPUS_PER_NODE : 1 ))" +
        ` --master_addr=$DSTACK_MASTER_NODE_IP --master_port=${TORCHRUN_MASTER_PORT} train.py --lr 'it'\\''s'`
      ])
      // The engine gets it as one task of 2 nodes.
      const configuration = Workflows.taskConfigurationOf(job)
      expect(configuration._tag === "Right" && configuration.right.nodes).toBe(2)
    }))

  it.effect("torchrun on one node (the default) is a plain task; args as a string and master_port are passed through", () =>
    Effect.gen(function*() {
      const [job] = yield* torchrun.createJobs({ script: "my train.py", args: "--epochs 3", master_port: 12345 }, ctx)
      expect(job.nodes).toBeUndefined()
      expect(job.commands).toHaveLength(1)
      expect(job.commands[0]).toMatch(/^torchrun --nnodes=1 --node_rank=\$DSTACK_NODE_RANK /)
      expect(job.commands[0]).toMatch(/ --master_port=12345 'my train\.py' --epochs 3$/)
      const configuration = Workflows.taskConfigurationOf(job)
      expect(configuration._tag === "Right" && configuration.right.nodes).toBe(1)
    }))

  it("quotes only what bash would split or expand", () => {
    expect(shellQuote("data/input.txt")).toBe("data/input.txt")
    expect(shellQuote("$HOME")).toBe("'$HOME'")
  })
})
