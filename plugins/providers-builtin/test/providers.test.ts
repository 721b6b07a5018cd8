// The built-in providers: core's Provider conformance suite for each, the jobs they make, and
// torchrun's refusal.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { testProvider } from "@dstack-ts/core/testing"
import plugin, { bash, curl, docker, python, shellQuote, torchrun } from "../src/index.ts"

const ctx = { workflowName: "test" }

testProvider(bash, { valid: [{ commands: ["echo hi"] }, { commands: ["x"], image: "busybox", environment: { A: 1 } }], invalid: [[{}, "commands"], [{ commands: [] }, "commands"]] })
testProvider(python, { valid: [{ script: "train.py" }, { script: "t.py", args: ["--a", "b c"], version: "3.11", requirements: "r.txt" }], invalid: [[{ args: "x" }, "script"], [{ script: "t.py", version: "2.7" }, "version"]] })
testProvider(docker, { valid: [{ image: "busybox", commands: ["true"] }], invalid: [[{ commands: ["true"] }, "image"]] })
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

  it.effect("torchrun checks its parameters, then refuses with a clear message", () =>
    Effect.gen(function*() {
      const invalid = yield* Effect.flip(torchrun.createJobs({ nodes: 2 }, ctx))
      expect(invalid.message).toMatch(/script/)
      const refused = yield* Effect.flip(torchrun.createJobs({ script: "train.py", nodes: 2 }, ctx))
      expect(refused.message).toMatch(/torchrun provider is not supported yet: it needs multi-node tasks/)
    }))

  it("quotes only what bash would split or expand", () => {
    expect(shellQuote("data/input.txt")).toBe("data/input.txt")
    expect(shellQuote("$HOME")).toBe("'$HOME'")
  })
})
