// Workflows end to end, with a real server (the local backend, the process executor) and the
// real CLI: `dstack run` of a 3-step chain (prepare → train → evaluate) with variables from
// .dstack/variables.yaml overridden on the command line; a rerun that skips the cached steps and
// says so; --no-cache; a failed dependency failing its dependents by name; cycles, bad
// parameters and unknown variables refused at their line before anything runs; the seed-003
// curl provider against a local HTTP server; a TypeScript provider (defineProvider) through the
// SDK; a 2-node torchrun workflow refused at plan time on the local backend (it cannot place a
// group of nodes; test/e2e/workflows-torchrun.test.ts runs one on a cluster fleet); ps and logs
// on workflow runs; and every workflow of examples/workflows.
import { serve } from "@hono/node-server"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Schema } from "effect"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import providersBuiltin from "@dstack-ts/providers-builtin"
import { Client } from "@dstack-ts/client"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { definePlugin, defineProvider, LocalRepo } from "@dstack-ts/core"
import tsPlugin from "../../examples/workflows/provider-ts.ts"
import { cliRunner, writeProject } from "../support/cli.ts"
import { describeWith } from "../support/components.ts"
import { dockerUnavailableReason, ensureBusyboxImage } from "../support/docker.ts"
import { Effect } from "effect"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"

const TOKEN = "workflows-e2e-token"
const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-workflows-e2e-"))
let server: Server
let listener: ReturnType<typeof serve>
let url: string
let files: http.Server
let filesUrl: string
const fetched: Array<string> = []

// A provider whose second job names the first its master: it starts once the master runs and
// gets the master's address.
const pair = defineProvider({
  name: "pair",
  parameters: Schema.Struct({}),
  createJobs: () => [
    { commands: ["echo master up", "sleep 4"], resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } },
    { commands: ["echo \"worker sees master at [$DSTACK_MASTER_HOST]\""], master: 0, resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } }
  ]
})
const pairPlugin = definePlugin({ name: "@test/provider-pair", version: "1.0.0", core: "^0.1.0", providers: { pair } })

const env = () => ({ ...process.env, HOME: home, NO_COLOR: "1", DSTACK_SERVER_URL: url, DSTACK_TOKEN: TOKEN, DSTACK_PROJECT: "main" })

const dstack = cliRunner(env)

const small = "resources: { cpu: 1.., memory: 1GB.., disk: 1GB.. }"

const project = (name: string, texts: Record<string, string>) => writeProject(home, name, texts)

const chain = `workflows:
  - name: prepare
    provider: bash
    commands:
      - echo "prepare size=\${{ variables.size }}"
    ${small}
  - name: train
    provider: python
    script: train.py
    args: ["--epochs", "\${{ variables.epochs }}"]
    depends_on: [prepare]
    ${small}
  - name: evaluate
    provider: bash
    depends_on: [train]
    commands:
      - echo "evaluate metric=\${{ variables.metric }}"
    ${small}
`
const chainVariables = "variables:\n  size: 100\n  epochs: 1\n  metric: accuracy\n"
const trainPy = "import sys\nprint('train args', ' '.join(sys.argv[1:]))\n"

beforeAll(async () => {
  server = await createServer({
    state: EmbeddedStateStore.layerMemory(),
    blobs: blobsMemory,
    adminToken: TOKEN,
    plugins: [backendLocal, transportLocal, providersBuiltin, tsPlugin, pairPlugin],
    runner: { entry: fileURLToPath(new URL("../../cli/src/runner.ts", import.meta.url)) },
    compute: { defaultBackends: [{ type: "local" }] }
  })
  listener = await new Promise((resolve) => {
    const s = serve({ fetch: server.app.fetch, hostname: "127.0.0.1", port: 0 }, () => resolve(s))
  })
  url = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`
  // The "internet" of the curl examples: a local HTTP server that records what was fetched.
  files = http.createServer((req, res) => {
    fetched.push(req.url ?? "")
    if (req.url === "/tinyshakespeare/input.txt") res.end("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    else res.writeHead(404).end("not found")
  })
  await new Promise<void>((r) => files.listen(0, "127.0.0.1", () => r()))
  filesUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}`
}, 60_000)

afterAll(async () => {
  ;(listener as unknown as { closeAllConnections?: () => void })?.closeAllConnections?.()
  await new Promise<void>((r) => listener?.close(() => r()))
  await new Promise<void>((r) => files?.close(() => r()))
  await server?.close()
  fs.rmSync(home, { recursive: true, force: true })
}, 30_000)

describe("dstack run (workflows) end to end", () => {
  it("runs prepare → train → evaluate in order with overridden variables, then skips the cached steps", async () => {
    const dir = project("chain", { ".dstack/workflows.yaml": chain, ".dstack/variables.yaml": chainVariables, "train.py": trainPy })
    const first = await dstack(["run", "evaluate", "--epochs", "3", "--metric=f1"], dir)
    expect(first.stderr).not.toMatch(/✗/)
    expect(first.code).toBe(0)
    expect(first.stdout).toMatch(/Workflow evaluate: 3 job\(s\), variables epochs=3, metric=f1, size=100/)
    expect(first.stdout).toMatch(/JOB\s+PROVIDER\s+DEPENDS ON\s+EXECUTOR\s+ARTIFACTS\s+CACHE/)
    expect(first.stdout).toMatch(/train\s+python\s+prepare\s+process\s+-\s+run/)
    const out = first.stdout
    expect(out).toContain("[prepare] prepare size=100")
    expect(out).toContain("[train] train args --epochs 3")
    expect(out).toContain("[evaluate] evaluate metric=f1")
    // Each step starts after the one it depends on ended: their output comes in that order.
    expect(out.indexOf("[prepare] prepare")).toBeLessThan(out.indexOf("[train] train args"))
    expect(out.indexOf("[train] train args")).toBeLessThan(out.indexOf("[evaluate] evaluate"))
    expect(out).toMatch(/Workflow evaluate done \(workflow run evaluate-[a-z0-9]+, run evaluate-[a-z0-9]+\)/)

    // Same variables and code: prepare and train are cached, evaluate runs again.
    const again = await dstack(["run", "evaluate", "--epochs", "3", "--metric", "f1"], dir)
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout).toMatch(/prepare\s+bash\s+-\s+process\s+-\s+cached \(run evaluate-[a-z0-9]+-prepare\)/)
    expect(again.stdout).toMatch(/train\s+python\s+prepare\s+process\s+-\s+cached \(run evaluate-[a-z0-9]+-train\)/)
    expect(again.stdout).not.toContain("prepare size=")
    expect(again.stdout).not.toContain("train args")
    expect(again.stdout).toContain("evaluate metric=f1")

    // Another epochs value changes train's key (and evaluate's), not prepare's.
    const other = await dstack(["run", "evaluate", "--epochs", "4"], dir)
    expect(other.code, other.stderr).toBe(0)
    expect(other.stdout).toMatch(/prepare\s+bash\s+-\s+process\s+-\s+cached/)
    expect(other.stdout).toContain("train args --epochs 4")

    // -d submits and returns: the server runs the DAG without the client.
    const detached = await dstack(["run", "evaluate", "--epochs", "9", "-d", "-n", "eval-detached"], dir)
    expect(detached.code, detached.stderr).toBe(0)
    expect(detached.stdout).toMatch(/Workflow run eval-detached submitted; the server runs it/)
    const client = Client.connect({ name: "main", url, token: TOKEN })
    let wf = await client.workflows.get("eval-detached")
    while (wf?.status === "running") {
      await new Promise((r) => setTimeout(r, 250))
      wf = await client.workflows.get("eval-detached")
    }
    expect(wf?.jobs.map((j) => [j.id, j.status])).toEqual([["prepare", "cached"], ["train", "done"], ["evaluate", "done"]])
    const trainLogs = await dstack(["logs", "eval-detached-train"], dir)
    expect(trainLogs.stdout).toContain("train args --epochs 9")

    // --no-cache runs everything.
    const forced = await dstack(["run", "evaluate", "--epochs", "3", "--no-cache"], dir)
    expect(forced.code, forced.stderr).toBe(0)
    expect(forced.stdout).toMatch(/prepare\s+bash\s+-\s+process\s+-\s+run \(--no-cache\)/)
    expect(forced.stdout).toContain("prepare size=100")

    // Workflow runs are runs: ps lists them, logs prints one.
    const ps = await dstack(["ps", "-a"], dir)
    expect(ps.stdout).toMatch(/evaluate-[a-z0-9]+-prepare/)
    const name = /Workflow evaluate done \(workflow run (evaluate-[a-z0-9]+)/.exec(first.stdout)![1]
    const logs = await dstack(["logs", `${name}-train`], dir)
    expect(logs.stdout).toContain("train args --epochs 3")
  }, 240_000)

  it("fails the dependents of a failed dependency, naming it, and exits 1", async () => {
    const dir = project("failing", {
      ".dstack/workflows.yaml": `workflows:
  - name: fetch
    provider: bash
    commands: ["echo fetching", "exit 3"]
    ${small}
  - name: use
    provider: bash
    depends_on: [fetch]
    commands: ["echo never printed"]
    ${small}
`
    })
    const res = await dstack(["run", "use"], dir)
    expect(res.code).toBe(1)
    expect(res.stdout).toContain("fetching")
    expect(res.stdout).not.toContain("never printed")
    expect(res.stderr).toMatch(/use not run: dependency fetch failed \(.*exit status 3/)
    expect(res.stderr).toMatch(/Workflow use failed: fetch \(run use-[a-z0-9]+-fetch\) failed: .*exit status 3; use failed: dependency fetch failed/)
  }, 120_000)

  it("refuses cycles, bad parameters, unknown variables and more nodes than the project can place before anything runs", async () => {
    const dir = project("invalid", {
      ".dstack/workflows.yaml": `workflows:
  - name: a
    provider: bash
    depends_on: [b]
    commands: [echo a]
  - name: b
    provider: bash
    depends_on: [a]
    commands: [echo b]
  - name: c
    provider: bash
    command: [echo c]
  - name: d
    provider: bash
    commands: ["echo \${{ variables.sise }}"]
  - name: dist
    provider: torchrun
    script: train.py
    nodes: 2
`,
      ".dstack/variables.yaml": "variables:\n  size: 1\n"
    })
    const cycle = await dstack(["run", "a"], dir)
    expect(cycle.code).toBe(1)
    expect(cycle.stderr).toMatch(/\.dstack\/workflows\.yaml:8:18 {2}workflows\[1\]\.depends_on\[0\] {2}depends_on makes a cycle: a → b → a/)
    const params = await dstack(["run", "c"], dir)
    expect(params.stderr).toMatch(/workflows\.yaml:12:5 {2}workflows\[2\]\.command {2}unknown key `command`; did you mean `commands`\?/)
    const variable = await dstack(["run", "d"], dir)
    expect(variable.stderr).toMatch(/workflows\.yaml:15:16 {2}workflows\[3\]\.commands\[0\] {2}unknown variable `sise`.*did you mean `size`\?/)
    const override = await dstack(["run", "d", "--sise", "2"], dir)
    expect(override.stderr).toMatch(/--sise is not a variable of d or its dependencies; did you mean --size\?/)
    const torchrun = await dstack(["run", "dist"], dir)
    expect(torchrun.code).toBe(1)
    expect(torchrun.stderr).toMatch(/workflows\.yaml:19:12 {2}workflows\[4\]\.nodes {2}nodes: 2 needs 2 instances of one placement: cluster fleet, or a backend that creates a job's instances together: the project has no placement: cluster fleet, and its backends cannot create the nodes together \(local: it makes one instance at a time/)
    const ps = await dstack(["ps", "-a"], dir)
    expect(ps.stdout).not.toMatch(/\b(a|b|c|d|dist)-[a-z0-9]{4}\b/)
  }, 120_000)

  it("runs the seed-003 curl provider against a local HTTP server", async () => {
    const dir = project("curl", {
      ".dstack/workflows.yaml": `workflows:
  - name: tinyshakespeare
    provider: curl
    url: ${filesUrl}/tinyshakespeare/input.txt
    output: data/input.txt
    ${small}
  - name: show
    provider: bash
    depends_on: [tinyshakespeare]
    commands: ["echo downloaded before me"]
    ${small}
`
    })
    const res = await dstack(["run", "show"], dir)
    expect(res.code, res.stderr).toBe(0)
    expect(fetched).toContain("/tinyshakespeare/input.txt")
    expect(res.stdout).toContain("[show] downloaded before me")
  }, 120_000)

  it("runs a TypeScript provider (defineProvider) through the SDK's client.workflows.run", async () => {
    const dir = project("sdk", {
      ".dstack/workflows.yaml": `workflows:\n  - name: download\n    provider: ts-curl\n    url: \${{ variables.base }}/tinyshakespeare/input.txt\n    output: input.txt\n`,
      ".dstack/variables.yaml": "variables:\n  base: http://127.0.0.1:1\n"
    })
    const client = Client.connect({ name: "main", url, token: TOKEN })
    const repo = await Effect.runPromise(LocalRepo.fromDir(dir))
    const { readWorkflowFiles } = await import("@dstack-ts/client")
    const logs: Array<string> = []
    const result = await client.workflows.run("download", { base: filesUrl }, {
      files: await readWorkflowFiles(dir),
      repo,
      onLog: (_, chunk) => logs.push(new TextDecoder().decode(chunk))
    })
    expect(result.status).toBe("done")
    expect(result.jobs.map((j) => [j.id, j.status])).toEqual([["download", "done"]])
    expect(logs.join("")).toContain("Before we proceed any further")
    // A parameter the provider's schema does not know is refused with its line.
    await expect(client.workflows.getPlan("download", {
      files: { ".dstack/workflows.yaml": "workflows:\n  - name: download\n    provider: ts-curl\n    url: x\n" }
    })).rejects.toThrow(/workflows\.yaml:2:5 {2}workflows\[0\]\.output {2}`output` is required/)
  }, 120_000)
})


describe("artifacts", () => {
  const sha256 = (file: string) => createHash("sha256").update(fs.readFileSync(file)).digest("hex")

  it("keeps a step's artifacts, hands them to the step that depends on it (also when cached), lists and downloads them whole, deletes them with the run", async () => {
    const dir = project("artifacts", {
      ".dstack/workflows.yaml": `workflows:
  - name: make
    provider: bash
    commands:
      - mkdir -p out/sub
      - head -c 3000000 /dev/urandom > out/big.bin
      - echo "hello artifacts" > out/sub/small.txt
      - sha256sum out/big.bin
    artifacts: [out]
    ${small}
  - name: use
    provider: bash
    depends_on: [make]
    commands:
      - sha256sum out/big.bin
      - cat out/sub/small.txt
    ${small}
`
    })
    const first = await dstack(["run", "use", "-n", "art-one"], dir)
    expect(first.code, first.stderr).toBe(0)
    expect(first.stdout).toMatch(/make\s+bash\s+-\s+process\s+out\s+run/)
    const made = /\[make\] ([0-9a-f]{64})  out\/big\.bin/.exec(first.stdout)?.[1]
    const used = /\[use\] ([0-9a-f]{64})  out\/big\.bin/.exec(first.stdout)?.[1]
    expect(made, first.stdout).toBeDefined()
    expect(used).toBe(made)
    expect(first.stdout).toContain("[use] hello artifacts")

    // Listed with sizes; downloaded through the CLI, every byte the same.
    const listed = await dstack(["artifacts", "list", "art-one-make"], dir)
    expect(listed.code, listed.stderr).toBe(0)
    expect(listed.stdout).toMatch(/art-one-make-0-0\s+out\/big\.bin\s+2\.9MB/)
    expect(listed.stdout).toMatch(/out\/sub\/small\.txt\s+16B/)
    const target = path.join(home, "downloaded")
    const downloaded = await dstack(["artifacts", "download", "art-one-make", "--path", target], dir)
    expect(downloaded.code, downloaded.stderr).toBe(0)
    expect(downloaded.stdout + downloaded.stderr).toMatch(/2 file\(s\), 2\.9MB, of art-one-make-0-0 written to .*; sizes and SHA-256 match/)
    expect(sha256(path.join(target, "out/big.bin"))).toBe(made)
    expect(fs.statSync(path.join(target, "out/big.bin")).size).toBe(3_000_000)
    expect(fs.readFileSync(path.join(target, "out/sub/small.txt"), "utf8")).toBe("hello artifacts\n")
    const client = Client.connect({ name: "main", url, token: TOKEN })
    const api = await client.artifacts.list("art-one-make")
    expect(api.jobs[0]?.files.find((f) => f.path === "out/big.bin")).toEqual({ path: "out/big.bin", size: 3_000_000, sha256: made })

    // make is cached: use runs again and still gets make's artifacts (from the earlier run).
    const again = await dstack(["run", "use", "-n", "art-two"], dir)
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout).toMatch(/make\s+bash\s+-\s+process\s+out\s+cached \(run art-one-make\)/)
    expect(again.stdout).toContain(`${made}  out/big.bin`)

    // A run without artifacts says so; a missing run is named.
    expect((await dstack(["artifacts", "list", "art-two"], dir)).stdout).toContain("Run art-two kept no artifacts")
    const missing = await dstack(["artifacts", "download", "no-such-run"], dir)
    expect(missing.code).not.toBe(0)
    expect(missing.stderr).toMatch(/Run no-such-run does not exist/)

    // Deleted with the run: then nothing is cached any more either.
    await client.runs.delete(["art-one-make"])
    expect((await client.artifacts.list("art-two")).jobs).toEqual([])
    await expect(client.artifacts.list("art-one-make")).rejects.toThrow(/does not exist/)
    const third = await dstack(["run", "use", "-n", "art-three"], dir)
    expect(third.code, third.stderr).toBe(0)
    expect(third.stdout).toMatch(/make\s+bash\s+-\s+process\s+out\s+run/)
  }, 240_000)

  it("fails a step whose artifact folder does not exist, naming it, and does not run its dependents", async () => {
    const dir = project("artifacts-missing", {
      ".dstack/workflows.yaml": `workflows:
  - name: make
    provider: bash
    commands: ["echo made nothing"]
    artifacts: [nothere]
    ${small}
  - name: use
    provider: bash
    depends_on: [make]
    commands: ["echo never printed"]
    ${small}
`
    })
    const res = await dstack(["run", "use"], dir)
    expect(res.code).toBe(1)
    expect(res.stdout).not.toContain("never printed")
    expect(res.stderr).toMatch(/cannot keep the job's artifacts: artifact "nothere" does not exist in the working directory/)
    expect(res.stderr).toMatch(/use failed: dependency make failed/)
  }, 120_000)
})

describe("workflow runs on the server", () => {
  it("goes on without the client, and `dstack stop` stops every step: the running one terminated, the waiting one never started", async () => {
    const dir = project("stopping", {
      ".dstack/workflows.yaml": `workflows:
  - name: slow
    provider: bash
    commands: ["echo slow started", "sleep 60"]
    ${small}
  - name: after
    provider: bash
    depends_on: [slow]
    commands: ["echo never printed"]
    ${small}
`
    })
    const client = Client.connect({ name: "main", url, token: TOKEN })
    const submitted = await dstack(["run", "after", "-d", "-n", "wf-stop"], dir)
    expect(submitted.code, submitted.stderr).toBe(0)
    let wf = await client.workflows.get("wf-stop")
    while (wf?.jobs[0]?.status !== "running") {
      await new Promise((r) => setTimeout(r, 250))
      wf = await client.workflows.get("wf-stop")
    }
    expect((await client.workflows.list()).map((w) => w.name)).toContain("wf-stop")
    const stopped = await dstack(["stop", "wf-stop", "-y"], dir)
    expect(stopped.code, stopped.stderr).toBe(0)
    expect(stopped.stdout + stopped.stderr).toMatch(/Workflow run wf-stop stopping/)
    while (wf?.status === "running") {
      await new Promise((r) => setTimeout(r, 250))
      wf = await client.workflows.get("wf-stop")
    }
    expect(wf?.status).toBe("terminated")
    expect(wf?.jobs.map((j) => [j.id, j.status])).toEqual([["slow", "terminated"], ["after", "terminated"]])
    expect(wf?.jobs[1]?.reason).toBe("the workflow run was stopped before the job started")
    expect(await client.workflows.get("no-such-workflow")).toBeUndefined()
  }, 120_000)
})

const dockerReason = await dockerUnavailableReason()

describe("master", () => {
  it("starts a job once its master runs, with the master's address", async () => {
    const client = Client.connect({ name: "main", url, token: TOKEN })
    const logs: Record<string, string> = {}
    const result = await client.workflows.run("cluster", {}, {
      files: { ".dstack/workflows.yaml": "workflows:\n  - name: cluster\n    provider: pair\n" },
      onLog: (job, chunk) => (logs[job.id] = (logs[job.id] ?? "") + new TextDecoder().decode(chunk))
    })
    expect(result.jobs.map((j) => [j.id, j.status]), JSON.stringify(logs)).toEqual([["cluster-0", "done"], ["cluster-1", "done"]])
    expect(logs["cluster-0"]).toContain("master up")
    expect(logs["cluster-1"]).toMatch(/worker sees master at \[[^\]\s]+\]/)
  }, 120_000)
})

describe("examples/workflows, each workflow run through the SDK", () => {
  const dir = path.resolve("examples/workflows")
  const runExample = async (workflow: string, variables: Record<string, string> = {}) => {
    const client = Client.connect({ name: "main", url, token: TOKEN })
    const { readWorkflowFiles } = await import("@dstack-ts/client")
    const repo = await Effect.runPromise(LocalRepo.fromDir(dir))
    const byJob: Record<string, string> = {}
    const result = await client.workflows.run(workflow, variables, {
      files: await readWorkflowFiles(dir),
      repo,
      noCache: true,
      onLog: (job, chunk) => (byJob[job.id] = (byJob[job.id] ?? "") + new TextDecoder().decode(chunk))
    })
    // Each job's log in one piece, prefixed with the job: `[train] epoch 1/2\nepoch 2/2\n`.
    const log = Object.entries(byJob).map(([id, text]) => `[${id}] ${text}`).join("")
    return { result, log }
  }

  it("hello (bash) with a variable overridden", async () => {
    const { result, log } = await runExample("hello", { who: "tests" })
    expect(result.status, log).toBe("done")
    expect(log).toContain("Hello, tests!")
  }, 60_000)

  it("python-hello (python: requirements, version, args)", async () => {
    const { result, log } = await runExample("python-hello")
    expect(result.status, log).toBe("done")
    expect(log).toContain("Hello from Python, world!")
  }, 90_000)

  it("tinyshakespeare (curl) from the local HTTP server", async () => {
    const before = fetched.length
    const { result, log } = await runExample("tinyshakespeare", { url: `${filesUrl}/tinyshakespeare/input.txt` })
    expect(result.status, log).toBe("done")
    expect(fetched.slice(before)).toEqual(["/tinyshakespeare/input.txt"])
  }, 60_000)

  it("evaluate: the pipeline prepare → train → evaluate", async () => {
    const { result, log } = await runExample("evaluate", { epochs: "2" })
    expect(result.status, log).toBe("done")
    expect(result.jobs.map((j) => [j.id, j.status])).toEqual([["prepare", "done"], ["train", "done"], ["evaluate", "done"]])
    expect(log).toContain("[prepare] preparing 1000 rows")
    expect(log).toContain("[train] epoch 1/2\nepoch 2/2")
    expect(log).toContain("[evaluate] evaluating after 2 epochs on 1000 rows")
  }, 120_000)

  describeWith("Docker", dockerReason === undefined, dockerReason ?? "", () => {
    it("in-docker (docker) in the locally built busybox image", async () => {
      const image = await ensureBusyboxImage()
      const { result, log } = await runExample("in-docker", { image })
      expect(result.status, log).toBe("done")
      expect(log).toContain(`in a container of ${image}`)
    }, 120_000)
  })
})
