// Provider programs end to end (seed-003), with a real server (the local backend, the process
// executor), the real CLI and the SDK: examples/workflows-provider's `curl` program — defined in
// .dstack/providers.yaml, run by the server as a job of the workflow run — downloads from a
// local HTTP server (the "internet" here) and hands the file down as an artifact; the same
// program from another repository (a local bare git repository, `provider: {repo, name}`); a
// program that crashes, one that prints something that is not jobs, and a missing repository or
// provider name, each failing with an error naming the provider and the cause.
import { serve } from "@hono/node-server"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect } from "effect"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import providersBuiltin from "@dstack-ts/providers-builtin"
import { Client, readWorkflowFiles } from "@dstack-ts/client"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { LocalRepo } from "@dstack-ts/core"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { cliRunner, writeProject } from "../support/cli.ts"

const TOKEN = "workflows-programs-token"
// The provider repository of these tests is a bare repository on this disk, which a server
// fetches only when its operator allows it (the server runs in this process).
process.env.DSTACK_SERVER_ALLOW_LOCAL_PROVIDER_REPOS = "1"
const EXAMPLE = path.resolve("examples/workflows-provider/")
const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-programs-e2e-"))
let server: Server
let listener: ReturnType<typeof serve>
let url: string
let files: http.Server
let filesUrl: string
const fetched: Array<string> = []
const TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n"

const env = () => ({ ...process.env, HOME: home, NO_COLOR: "1", DSTACK_SERVER_URL: url, DSTACK_TOKEN: TOKEN, DSTACK_PROJECT: "main" })

const dstack = cliRunner(env)

const small = "resources: { cpu: 1.., memory: 1GB.., disk: 1GB.. }"

const project = (name: string, texts: Record<string, string>) => writeProject(home, name, texts)

/** Runs a workflow of `dir` through the SDK; each job's log by job id. */
const runIn = async (dir: string, workflow: string, variables: Record<string, string> = {}) => {
  const client = Client.connect({ name: "main", url, token: TOKEN })
  const repo = await Effect.runPromise(LocalRepo.fromDir(dir))
  const logs: Record<string, string> = {}
  const result = await client.workflows.run(workflow, variables, {
    files: await readWorkflowFiles(dir),
    repo,
    noCache: true,
    onLog: (job, chunk) => (logs[job.id] = (logs[job.id] ?? "") + new TextDecoder().decode(chunk))
  })
  return { result, logs, client }
}

beforeAll(async () => {
  server = await createServer({
    state: EmbeddedStateStore.layerMemory(),
    blobs: blobsMemory,
    adminToken: TOKEN,
    plugins: [backendLocal, transportLocal, providersBuiltin],
    runner: { entry: fileURLToPath(new URL("../../cli/src/runner.ts", import.meta.url)) },
    compute: { defaultBackends: [{ type: "local" }] }
  })
  listener = await new Promise((resolve) => {
    const s = serve({ fetch: server.app.fetch, hostname: "127.0.0.1", port: 0 }, () => resolve(s))
  })
  url = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`
  files = http.createServer((req, res) => {
    fetched.push(req.url ?? "")
    if (req.url === "/tinyshakespeare/input.txt") res.end(TEXT)
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

describe("a provider program of .dstack/providers.yaml (examples/workflows-provider)", () => {
  it("runs seed-003's curl program: its output in the logs, its job downloads from the local HTTP server, the file handed down as an artifact", async () => {
    const before = fetched.length
    const res = await dstack(["run", "lines", "--url", `${filesUrl}/tinyshakespeare/input.txt`], EXAMPLE)
    expect(res.code, res.stdout + res.stderr).toBe(0)
    expect(fetched.slice(before)).toEqual(["/tinyshakespeare/input.txt"])
    expect(res.stdout).toContain(`curl provider: ${filesUrl}/tinyshakespeare/input.txt -> data/input.txt`)
    expect(res.stdout).toContain("2 lines downloaded")
  }, 120_000)

  it("runs the program's job as the workflow asked for, through the SDK", async () => {
    const { result, logs } = await runIn(EXAMPLE, "tinyshakespeare", { url: `${filesUrl}/tinyshakespeare/input.txt` })
    expect(result.status, JSON.stringify(logs)).toBe("done")
    expect(result.jobs.map((j) => [j.id, j.status])).toEqual([["tinyshakespeare:provider", "done"], ["tinyshakespeare", "done"]])
    expect(logs["tinyshakespeare:provider"]).toContain("curl provider:")
  }, 120_000)

  it("refuses parameters its schema.yaml does not allow, at their line, before anything runs", async () => {
    const dir = project("bad-params", {
      ".dstack/workflows.yaml": "workflows:\n  - name: get\n    provider: curl\n    url: 42\n",
      ".dstack/providers.yaml": fs.readFileSync(path.join(EXAMPLE, ".dstack/providers.yaml"), "utf8"),
      "providers/curl/schema.yaml": fs.readFileSync(path.join(EXAMPLE, "providers/curl/schema.yaml"), "utf8")
    })
    const res = await dstack(["run", "get"], dir)
    expect(res.code).toBe(1)
    expect(res.stderr).toMatch(/workflows\.yaml:4:10 {2}workflows\[0\]\.url {2}expected string, got 42/)
    expect(res.stderr).toMatch(/workflows\.yaml:2:5 {2}workflows\[0\]\.output {2}`output` is required/)
  }, 60_000)

  it("fails the workflow when the program crashes, naming the provider, its exit status and the end of its output", async () => {
    const dir = project("crash", {
      ".dstack/workflows.yaml": `workflows:\n  - name: get\n    provider: broken\n  - name: after\n    provider: bash\n    depends_on: [get]\n    commands: [echo never]\n    ${small}\n`,
      ".dstack/providers.yaml": "providers:\n  - name: broken\n    commands:\n      - echo 'reading the workflow'\n      - \"echo 'Traceback: KeyError url' >&2\"\n      - exit 3\n"
    })
    const { result } = await runIn(dir, "after")
    expect(result.status).toBe("failed")
    const [program, after] = result.jobs
    expect(program.status).toBe("failed")
    expect(program.reason).toMatch(/^provider broken failed \(.*exit status 3.*\); its output ends:\nreading the workflow\nTraceback: KeyError url$/)
    expect(after.status).toBe("failed")
    expect(after.reason).toMatch(/^dependency get:provider failed \(provider broken failed/)
  }, 120_000)

  it("fails the workflow when the program prints something that is not jobs, naming the provider and what it printed", async () => {
    const dir = project("not-jobs", {
      ".dstack/workflows.yaml": "workflows:\n  - name: get\n    provider: chatty\n",
      ".dstack/providers.yaml": "providers:\n  - name: chatty\n    commands:\n      - echo 'here are your jobs'\n      - >-\n        echo '{\"jobs\": [{\"image\": \"x\"}]}'\n"
    })
    const { result } = await runIn(dir, "get")
    expect(result.status).toBe("failed")
    expect(result.jobs[0].reason).toBe("provider chatty printed invalid jobs: jobs[0]: `commands` is required")
    const cli = await dstack(["run", "get"], dir)
    expect(cli.code).toBe(1)
    expect(cli.stdout + cli.stderr).toContain("provider chatty printed invalid jobs: jobs[0]: `commands` is required")
  }, 120_000)
})

describe("a provider from another repository (`provider: {repo, name}`)", () => {
  const git = (cwd: string, ...args: Array<string>) =>
    execFileSync("git", args, { cwd, stdio: "pipe", env: { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@t", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@t" } })
  let bare: string

  beforeAll(() => {
    // The provider repository: examples/workflows-provider's program and schema, pushed to a bare repository.
    const work = path.join(home, "provider-repo")
    fs.cpSync(path.join(EXAMPLE, "providers"), path.join(work, "providers"), { recursive: true })
    fs.mkdirSync(path.join(work, ".dstack"), { recursive: true })
    fs.copyFileSync(path.join(EXAMPLE, ".dstack/providers.yaml"), path.join(work, ".dstack/providers.yaml"))
    bare = path.join(home, "providers.git")
    git(home, "init", "--quiet", "--bare", bare)
    git(work, "init", "--quiet", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "--quiet", "-m", "the curl provider")
    git(work, "push", "--quiet", bare, "main")
    git(bare, "symbolic-ref", "HEAD", "refs/heads/main")
  })

  const workflows = (repo: string, name = "curl") => `workflows:
  - name: tinyshakespeare
    provider:
      repo: ${repo}
      name: ${name}
    url: \${{ variables.url }}
    output: data/input.txt
    artifacts: [data]
    ${small}
  - name: lines
    provider: bash
    depends_on: [tinyshakespeare]
    commands:
      - >-
        echo "$(wc -l < data/input.txt) lines from the other repository's provider"
    ${small}
`

  it("is fetched with git and runs at that repository's commit; its jobs run with this project's code", async () => {
    const dir = project("uses-repo", {
      ".dstack/workflows.yaml": workflows(bare),
      ".dstack/variables.yaml": `variables:\n  url: ${filesUrl}/tinyshakespeare/input.txt\n`
    })
    const before = fetched.length
    const { result, logs } = await runIn(dir, "lines")
    expect(result.status, JSON.stringify({ logs, jobs: result.jobs })).toBe("done")
    expect(result.jobs.map((j) => [j.id, j.status])).toEqual([["tinyshakespeare:provider", "done"], ["tinyshakespeare", "done"], ["lines", "done"]])
    expect(fetched.slice(before)).toEqual(["/tinyshakespeare/input.txt"])
    expect(logs["lines"]).toContain("2 lines from the other repository's provider")
  }, 120_000)

  it("a repository that does not exist, or lacks the provider, is refused at its line before anything runs", async () => {
    const missing = path.join(home, "no-such-repo.git")
    const dir = project("missing-repo", {
      ".dstack/workflows.yaml": workflows(missing),
      ".dstack/variables.yaml": "variables:\n  url: x\n"
    })
    const res = await dstack(["run", "lines"], dir)
    expect(res.code).toBe(1)
    expect(res.stderr).toContain(`workflows.yaml:4:13  workflows[0].provider.repo  cannot fetch the provider repository: cannot fetch ${missing}: git clone exited with 128`)
    const other = project("missing-name", {
      ".dstack/workflows.yaml": workflows(bare, "wget"),
      ".dstack/variables.yaml": "variables:\n  url: x\n"
    })
    const named = await dstack(["run", "lines"], other)
    expect(named.code).toBe(1)
    expect(named.stderr).toContain(`workflows.yaml:5:13  workflows[0].provider.name  repository ${bare} defines no provider wget; it defines: curl`)
  }, 60_000)
})
