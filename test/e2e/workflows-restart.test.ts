// A workflow run outlives its server: `dstack server` (the default build, a real process) is
// killed while the second of three steps runs and started again on the same state; the
// workflow goes on — the finished step is not run again, the running one is followed to its
// end, the one not yet submitted is submitted — and ends done. Then deleting a step's run
// removes the cache entry that pointed at it (its blobs gone from the server's blob store): the
// next run of the workflow runs that step again.
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Client, type Workflows } from "@dstack-ts/client"
import { removeUnder } from "../reliability/serverProcess.ts"

type WorkflowRun = Workflows.WorkflowRun

import { CLI } from "../support/cli.ts"
const TOKEN = "workflows-restart-token"
const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-workflows-restart-"))
// TMPDIR: the local backend's runners work under `<tmp>/dstack-ts-local`, here the suite's own
// directory, so the ones it leaves are found by their `--work-dir` and reaped at the end.
const tmp = path.join(home, "tmp")
fs.mkdirSync(tmp)
const env = { ...process.env, HOME: home, TMPDIR: tmp, DSTACK_SERVER_DIR: path.join(home, "server"), NO_COLOR: "1" }
let server: ChildProcess | undefined
let port: number

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })

const startServer = async () => {
  const child = spawn(process.execPath, [CLI, "server", "--host", "127.0.0.1", "--port", String(port), "--token", TOKEN], { env })
  // Kept at once, so that afterAll stops it even when it never says it started.
  server = child
  await new Promise<void>((resolve, reject) => {
    let out = ""
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 180_000)
    const onData = (d: Buffer) => {
      out += d
      if (/running at http/.test(out)) {
        clearTimeout(timer)
        resolve()
      }
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    child.once("exit", (code) => reject(new Error(`server exited with ${code}:\n${out}`)))
  })
}

const killServer = async () => {
  const child = server!
  server = undefined
  const exited = new Promise((r) => child.once("exit", r))
  child.kill("SIGKILL")
  await exited
}

const dstack = (args: ReadonlyArray<string>, cwd: string) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })

const client = () => Client.connect({ name: "main", url: `http://127.0.0.1:${port}`, token: TOKEN })

/** Polls the workflow run until `done` says so; the last record. */
const waitFor = async (name: string, done: (run: WorkflowRun) => boolean, timeoutMs: number) => {
  const until = Date.now() + timeoutMs
  let last: WorkflowRun | undefined
  while (Date.now() < until) {
    last = await client().workflows.get(name).catch(() => undefined)
    if (last !== undefined && done(last)) return last
    await new Promise((r) => setTimeout(r, 300))
  }
  throw new Error(`workflow run ${name} did not get there in ${timeoutMs} ms; last: ${JSON.stringify(last?.jobs.map((j) => [j.id, j.status, j.reason]))}`)
}

const small = "resources: { cpu: 1.., memory: 1GB.., disk: 1GB.. }"
const dir = path.join(home, "project")

beforeAll(async () => {
  port = await freePort()
  fs.mkdirSync(path.join(dir, ".dstack"), { recursive: true })
  fs.writeFileSync(path.join(dir, ".dstack/workflows.yaml"), `workflows:
  - name: first
    provider: bash
    commands: ["echo first done"]
    ${small}
  - name: second
    provider: bash
    depends_on: [first]
    commands: ["sleep 8", "echo second done"]
    ${small}
  - name: third
    provider: bash
    depends_on: [second]
    commands: ["echo third done"]
    ${small}
`)
  await startServer()
}, 200_000)

afterAll(async () => {
  if (server !== undefined) {
    const child = server
    const exited = new Promise((r) => child.once("exit", r))
    child.kill("SIGTERM")
    await exited
  }
  // The local backend's runners outlive their server by design (a restarted server takes them
  // up again), and the one the killed server started, taken up by the second, stays idle after
  // the second server stops: it only stops its own.
  await removeUnder(tmp)
  fs.rmSync(home, { recursive: true, force: true })
}, 30_000)

describe("workflow runs across a server restart", () => {
  it("go on after the server starts again: finished steps are not rerun, steps not yet submitted are submitted", async () => {
    const submitted = await dstack(["run", "third", "-d", "-n", "resumed"], dir)
    expect(submitted.code, submitted.stdout + submitted.stderr).toBe(0)
    const before = await waitFor("resumed", (r) => r.jobs[1].status === "running", 90_000)
    expect(before.jobs.map((j) => j.status)).toEqual(["done", "running", "waiting"])

    await killServer()
    await startServer()

    const after = await waitFor("resumed", (r) => r.status !== "running", 120_000)
    expect(after.status, JSON.stringify(after.jobs)).toBe("done")
    expect(after.jobs.map((j) => [j.id, j.status])).toEqual([["first", "done"], ["second", "done"], ["third", "done"]])
    // The same runs: first was not run again, second was followed rather than submitted again.
    expect(after.jobs[0].runId).toBe(before.jobs[0].runId)
    expect(after.jobs[1].runId).toBe(before.jobs[1].runId)
    const logs = await dstack(["logs", after.jobs[2].runName!], dir)
    expect(logs.stdout).toContain("third done")
  }, 300_000)

  it("deleting a step's run removes the cache entry pointing at it: the step runs again", async () => {
    const done = await waitFor("resumed", (r) => r.status === "done", 10_000)
    const cached = await dstack(["run", "third", "-n", "again"], dir)
    expect(cached.code, cached.stdout + cached.stderr).toBe(0)
    const again = (await client().workflows.get("again"))!
    expect(again.jobs.map((j) => [j.id, j.status])).toEqual([["first", "cached"], ["second", "cached"], ["third", "done"]])
    expect(again.jobs[0].runId).toBe(done.jobs[0].runId)

    // The entry is a blob of the server's file blob store (@dstack-ts/blob-unstorage's fs
    // driver), found by its manifest: a file named after the key, ending in `$m`.
    const blobsNamed = (end: string): Array<string> =>
      (fs.readdirSync(path.join(home, "server"), { recursive: true }) as Array<string>).filter((f) => f.endsWith(`${end}$m`))
    const entry = `workflow-cache/main/${done.jobs[0].cacheKey}`
    expect(blobsNamed(entry)).toHaveLength(1)
    expect(blobsNamed(`workflow-cache/main/${done.jobs[1].cacheKey}`)).toHaveLength(1)
    const deleted = await dstack(["delete", done.jobs[0].runName!, "-y"], dir)
    expect(deleted.code, deleted.stdout + deleted.stderr).toBe(0)
    expect(blobsNamed(entry)).toEqual([])
    expect(blobsNamed(`workflow-cache-runs/main/${done.jobs[0].runId}/${done.jobs[0].cacheKey}`)).toEqual([])
    // The other steps' entries stay.
    expect(blobsNamed(`workflow-cache/main/${done.jobs[1].cacheKey}`)).toHaveLength(1)
    const rerun = await dstack(["run", "third", "-n", "third-time"], dir)
    expect(rerun.code, rerun.stdout + rerun.stderr).toBe(0)
    const third = (await client().workflows.get("third-time"))!
    expect(third.jobs.map((j) => [j.id, j.status])).toEqual([["first", "done"], ["second", "cached"], ["third", "done"]])
    expect(third.jobs[0].runId).not.toBe(done.jobs[0].runId)
  }, 300_000)
})
