// The runner pool end to end: a real server (createServer + serve, on Node or Deno) with
// @dstack-ts/backend-pool, and a real `dstack runner join` process — a separate process on
// this machine, and one inside a network namespace whose runner the server has no route to.
// The machine joins over its outbound WebSocket; tasks run on it with their logs and exit
// status; a machine that leaves (SIGTERM), dies (SIGKILL) or is removed fails its running job
// with why; a server restarted under a running job finds the machine (and the job) again once
// the machine rejoins by itself.
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { makePoolPlugin } from "@dstack-ts/backend-pool"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { serve, type Serving } from "../../core/src/server/serve.ts"
import { httpCall } from "../support/api.ts"
import { createNetnsHosts, describeWithNetns, type NetnsHosts } from "../support/netns.ts"
import { describeWith } from "../support/components.ts"
import { createTestDatabase, findPostgres, type TestDatabase } from "../support/postgres.ts"
import { PostgresStateStore } from "@dstack-ts/state-postgres"

const TOKEN = "pool-e2e-token"
import { CLI } from "../support/cli.ts"
const work = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-pool-e2e-"))
/** The CLI on the runtime the tests run on (`deno run -A` under Deno). */
const cliArgv = (args: ReadonlyArray<string>): Array<string> =>
  "Deno" in globalThis ? [process.execPath, "run", "-A", CLI, ...args] : [process.execPath, CLI, ...args]

interface Started {
  readonly server: Server
  readonly serving: Serving
  readonly url: string
  readonly call: ReturnType<typeof httpCall>
  readonly pool: ReturnType<typeof makePoolPlugin>
}

interface ServerOptions {
  /** A PostgreSQL database to keep the state in (replicas share it). */
  readonly databaseUrl?: string
  /** Keep the state here (a restart reads it again); default: in memory. */
  readonly dataDir?: string
  readonly port?: number
  /** The pool's time for a dropped machine to rejoin. */
  readonly rejoinGraceMs?: number
  /** The project has the pool backend already (a restarted server). */
  readonly restarted?: boolean
}

/** A server with the pool plugin only, listening on `hostname`; project main has the pool backend. */
const startServer = async (hostname: string, options: ServerOptions = {}): Promise<Started> => {
  const pool = makePoolPlugin(options.rejoinGraceMs !== undefined ? { rejoinGraceMs: options.rejoinGraceMs } : {})
  const server = await createServer({
    state: options.databaseUrl !== undefined
      ? PostgresStateStore.layer({ url: options.databaseUrl })
      : options.dataDir !== undefined ? EmbeddedStateStore.layer({ dataDir: options.dataDir }) : EmbeddedStateStore.layerMemory(),
    blobs: blobsMemory,
    adminToken: TOKEN,
    // Two replicas here only plan (virtual repos, no code archives): memory blobs are enough.
    ...(options.databaseUrl !== undefined ? { allowLocalBlobs: true } : {}),
    plugins: [pool],
    // A machine that is gone is asked about within seconds; the runner's own timeout is long.
    engine: { resyncMs: 1_000, unreachableMs: 120_000 }
  })
  const serving = await serve(server, { hostname, port: options.port ?? 0, handleSignals: false })
  const url = `http://${hostname}:${serving.port}`
  const call = httpCall(url, TOKEN)
  if (options.restarted !== true) {
    const made = await call("/api/project/main/backends/create", { type: "pool" })
    expect(made.status, JSON.stringify(made.body)).toBe(200)
  }
  return { server, serving, url, call, pool }
}

/** `dstack runner join` as a child process (`prefix` runs it elsewhere, e.g. in a namespace). */
const joinProcess = (url: string, name: string, prefix: ReadonlyArray<string> = []) => {
  const dir = fs.mkdtempSync(path.join(work, `${name}-`))
  const argv = [...prefix, ...cliArgv(["runner", "join", url, "--token", TOKEN, "--name", name, "--heartbeat", "1", "--work-dir", dir])]
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, NO_COLOR: "1" }, stdio: ["ignore", "pipe", "pipe"] })
  let out = ""
  child.stdout!.on("data", (d) => (out += d))
  child.stderr!.on("data", (d) => (out += d))
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  const joined = new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not join within 90 s:\n${out}`)), 90_000)
    const check = () => {
      const line = out.split("\n").find((l) => l.startsWith("{\"joined\""))
      if (line !== undefined) {
        clearTimeout(timer)
        resolve(JSON.parse(line))
      }
    }
    child.stdout!.on("data", check)
    void exited.then((code) => reject(new Error(`${name} exited with ${code} before joining:\n${out}`)))
  })
  return { child, joined, exited, output: () => out }
}

/** The exit code, or a failure showing the process's output when it has not exited in time. */
const exitedWithin = (box: ReturnType<typeof joinProcess>, ms: number) =>
  Promise.race([
    box.exited,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`still running after ${ms} ms:\n${box.output()}`)), ms))
  ])

/** The pool instances of a machine (by its key) in the instances list. */
const instancesOf = async (call: Started["call"], key: string): Promise<Array<any>> =>
  ((await call("/api/instances/list", { project_names: ["main"] })).body as Array<any>).filter((i) => i.hostname === key)

/** Polls the machine's instances until `check` holds (the rows are written just after the join). */
const instancesUntil = async (call: Started["call"], key: string, check: (rows: Array<any>) => boolean) => {
  let rows: Array<any> = []
  for (let i = 0; i < 100; i++) {
    rows = await instancesOf(call, key)
    if (check(rows)) return rows
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`instances of ${key} not as expected within 10 s: ${JSON.stringify(rows)}`)
}

const task = (call: Started["call"], runName: string, commands: ReadonlyArray<string>) =>
  call("/api/project/main/runs/apply", {
    plan: {
      run_spec: {
        run_name: runName,
        repo_id: "pool-e2e",
        repo_data: { repo_type: "virtual" },
        configuration: { type: "task", commands, resources: { cpu: "1..", memory: "0.1GB..", disk: "0.1GB.." } }
      }
    }
  })

const waitFor = async (call: Started["call"], runName: string, done: (run: any) => boolean, timeoutMs = 90_000) => {
  const start = Date.now()
  let run: any
  while (Date.now() - start < timeoutMs) {
    run = (await call("/api/project/main/runs/get", { run_name: runName })).body
    if (done(run)) return run
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`run ${runName}: not there within ${timeoutMs} ms; last ${JSON.stringify(run?.status)} ${JSON.stringify(run?.jobs?.[0]?.job_submissions?.at(-1))}`)
}
const finished = (run: any) => ["done", "failed", "terminated"].includes(run.status)

const logsOf = async (call: Started["call"], runName: string) =>
  (await call("/api/project/main/logs/poll", { run_name: runName })).body.logs.map((l: any) => l.message).join("")

const stop = async (s: Started | undefined) => {
  await s?.serving.close()
  await s?.server.close()
}

describe("runner pool: dstack runner join as a separate process", () => {
  let s: Started
  const children: Array<ChildProcess> = []
  beforeAll(async () => {
    s = await startServer("127.0.0.1", { rejoinGraceMs: 3_000 })
  }, 120_000)
  afterAll(async () => {
    for (const c of children) c.kill("SIGKILL")
    await stop(s)
  }, 90_000)

  it("a joined machine runs tasks with logs and exit status; leaving (SIGTERM) fails its running job with why", async () => {
    const box = joinProcess(s.url, "box-a")
    children.push(box.child)
    expect(await box.joined).toMatchObject({ joined: "box-a.main.pool", project: "main" })
    // At once an instance of the project, before any job: idle, with the machine's resources.
    const [instance] = await instancesUntil(s.call, "box-a.main.pool", (rows) => rows.length === 1)
    expect(instance).toMatchObject({ backend: "pool", name: "box-a", status: "idle", region: "main", price: 0, project_name: "main" })
    expect(instance.instance_type.resources.cpus).toBeGreaterThan(0)

    const plan = await s.call("/api/project/main/runs/get_plan", {
      run_spec: { run_name: "p", repo_id: "pool-e2e", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["true"] } }
    })
    expect(JSON.stringify(plan.body)).toContain("box-a")

    expect((await task(s.call, "pool-ok", ["echo hello from $(hostname) in the pool", "echo second line"])).status).toBe(200)
    const ok = await waitFor(s.call, "pool-ok", finished)
    expect(ok.status, JSON.stringify(ok.jobs[0].job_submissions.at(-1))).toBe("done")
    expect(ok.jobs[0].job_submissions.at(-1).job_provisioning_data).toMatchObject({ backend: "pool", hostname: "box-a.main.pool" })
    expect(await logsOf(s.call, "pool-ok")).toMatch(/hello from .* in the pool\nsecond line\n/)
    expect(ok.jobs[0].job_submissions.at(-1).job_provisioning_data.instance_id, "the job ran on the machine's own instance").toBe(instance.id)
    expect(await instancesUntil(s.call, "box-a.main.pool", (rows) => rows[0]?.status === "idle"), "idle again, still one").toHaveLength(1)

    await task(s.call, "pool-exit", ["echo failing", "exit 3"])
    const bad = await waitFor(s.call, "pool-exit", finished)
    expect(bad.status).toBe("failed")
    expect(bad.jobs[0].job_submissions.at(-1)).toMatchObject({ termination_reason: "container_exited_with_error", exit_status: 3 })

    await task(s.call, "pool-left", ["echo started", "sleep 120"])
    // Wait for the first line, so the job is surely on the runner.
    for (let i = 0; i < 300 && !(await logsOf(s.call, "pool-left")).includes("started"); i++) await new Promise((r) => setTimeout(r, 200))
    expect(await logsOf(s.call, "pool-left")).toContain("started")
    box.child.kill("SIGTERM")
    const code = await box.exited
    expect(box.output()).toContain("left the pool of project main")
    // Deno's child_process reports a child it sent a signal to as ended by it (code null),
    // though the child handled the signal and exited 0 (the line above).
    expect("Deno" in globalThis ? [0, null] : [0]).toContain(code)
    const left = await waitFor(s.call, "pool-left", finished)
    expect(left.status).toBe("failed")
    expect(left.jobs[0].job_submissions.at(-1)).toMatchObject({
      termination_reason: "instance_unreachable",
      termination_reason_message: "pool machine box-a left the pool: stopped by SIGTERM"
    })
    const [gone] = await instancesUntil(s.call, "box-a.main.pool", (rows) => rows[0]?.status === "terminated")
    expect(gone).toMatchObject({ id: instance.id, termination_reason_message: "pool machine box-a left the pool: stopped by SIGTERM" })
  }, 240_000)

  it("a machine that dies (SIGKILL) fails its running job as instance_unreachable once it did not rejoin in time, naming the lost connection", async () => {
    const box = joinProcess(s.url, "box-b")
    children.push(box.child)
    await box.joined
    await task(s.call, "pool-died", ["echo started", "sleep 20"])
    for (let i = 0; i < 300 && !(await logsOf(s.call, "pool-died")).includes("started"); i++) await new Promise((r) => setTimeout(r, 200))
    expect(await logsOf(s.call, "pool-died")).toContain("started")
    box.child.kill("SIGKILL")
    const died = await waitFor(s.call, "pool-died", finished)
    expect(died.status, JSON.stringify(died.jobs[0].job_submissions)).toBe("failed")
    expect(died.jobs[0].job_submissions.at(-1)).toMatchObject({
      termination_reason: "instance_unreachable",
      termination_reason_message: "pool machine box-b lost its connection to the server, and did not rejoin within 3 s"
    })
    const [gone] = await instancesUntil(s.call, "box-b.main.pool", (rows) => rows.length === 1 && rows[0].status === "terminated")
    expect(gone.termination_reason_message).toBe("pool machine box-b lost its connection to the server, and did not rejoin within 3 s")
  }, 240_000)

  it("a machine an admin removes is told so, exits 1 without rejoining, and its running job fails saying it was removed", async () => {
    const box = joinProcess(s.url, "box-c")
    children.push(box.child)
    await box.joined
    await task(s.call, "pool-removed", ["echo started", "sleep 60"])
    for (let i = 0; i < 300 && !(await logsOf(s.call, "pool-removed")).includes("started"); i++) await new Promise((r) => setTimeout(r, 200))
    const missing = await s.call("/api/project/main/runner/remove", { name: "no-such-box" })
    expect(missing.status).toBe(400)
    expect(JSON.stringify(missing.body)).toContain('no pool machine \\"no-such-box\\" is joined to project main')
    const removed = await s.call("/api/project/main/runner/remove", { name: "box-c" })
    expect(removed.status, JSON.stringify(removed.body)).toBe(200)
    expect(removed.body).toEqual({ removed: "box-c.main.pool" })
    expect(await exitedWithin(box, 60_000)).toBe(1)
    expect(box.output()).toContain("left the pool: the server dropped this machine: pool machine box-c was removed from the pool: by admin")
    expect(box.output()).not.toContain("rejoining")
    const run = await waitFor(s.call, "pool-removed", finished)
    expect(run.jobs[0].job_submissions.at(-1)).toMatchObject({
      termination_reason: "instance_unreachable",
      termination_reason_message: "pool machine box-c was removed from the pool: by admin"
    })
  }, 240_000)

  it("a join with a token of no member is refused with the server's answer, exit 1", async () => {
    const argv = cliArgv(["runner", "join", s.url, "--token", "not-a-token", "--name", "box-x", "--work-dir", fs.mkdtempSync(path.join(work, "x-"))])
    const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, NO_COLOR: "1" } })
    let out = ""
    child.stdout.on("data", (d) => (out += d))
    child.stderr.on("data", (d) => (out += d))
    const code = await new Promise((r) => child.once("exit", r))
    expect(code).toBe(1)
    expect(out).toMatch(/cannot join the pool of project main at http:\/\/127\.0\.0\.1:\d+: the server refused the join \(HTTP 403\): Invalid token/)
  }, 120_000)
})

describe("runner pool: the server restarts under a running job", () => {
  let s: Started | undefined
  let box: ReturnType<typeof joinProcess> | undefined
  afterAll(async () => {
    box?.child.kill("SIGKILL")
    await stop(s)
  }, 90_000)

  it("the machine rejoins by itself, one line per attempt; the new server finds the job through it and the job finishes", async () => {
    const dataDir = fs.mkdtempSync(path.join(work, "data-"))
    s = await startServer("127.0.0.1", { dataDir })
    const port = s.serving.port
    box = joinProcess(s.url, "box-r")
    await box.joined
    await task(s.call, "pool-restart", ["echo started", "sleep 8", "echo finished after the restart"])
    for (let i = 0; i < 300 && !(await logsOf(s.call, "pool-restart")).includes("started"); i++) await new Promise((r) => setTimeout(r, 200))
    expect(await logsOf(s.call, "pool-restart")).toContain("started")
    const pd = (await s.call("/api/project/main/runs/get", { run_name: "pool-restart" })).body.jobs[0].job_submissions.at(-1).job_provisioning_data

    await stop(s)
    s = undefined
    // The machine notices and tries again, with a line per attempt.
    for (let i = 0; i < 150 && !box.output().includes("rejoining in"); i++) await new Promise((r) => setTimeout(r, 100))
    expect(box.output()).toMatch(/dstack runner join: lost the connection to http:\/\/127\.0\.0\.1:\d+: /)
    expect(box.output()).toMatch(/dstack runner join: rejoining in \d+\.\d s \(attempt 1\)/)
    s = await startServer("127.0.0.1", { dataDir, port, restarted: true })
    const run = await waitFor(s.call, "pool-restart", finished, 120_000)
    expect(run.status, JSON.stringify(run.jobs[0].job_submissions)).toBe("done")
    expect(run.jobs[0].job_submissions, "the same job, not a new one").toHaveLength(1)
    expect(run.jobs[0].job_submissions[0].job_provisioning_data).toMatchObject({ hostname: "box-r.main.pool", instance_id: pd.instance_id })
    expect(await logsOf(s.call, "pool-restart")).toMatch(/started\n[\s\S]*finished after the restart\n/)
    expect(box.output()).toMatch(/dstack runner join: rejoined the pool of project main as box-r\.main\.pool after \d+\.\d s \(attempt \d+\)/)
    expect(box.child.exitCode, "still joined").toBeNull()
  }, 300_000)
})

const pg = await findPostgres()
describeWith("postgresql", pg.available, pg.reason, () => {
  describe("runner pool: two server replicas on one PostgreSQL", () => {
    let db: TestDatabase
    let a: Started | undefined
    let b: Started | undefined
    let box: ReturnType<typeof joinProcess> | undefined
    afterAll(async () => {
      box?.child.kill("SIGKILL")
      await stop(a)
      await stop(b)
      await db?.drop()
    }, 90_000)

    it("the replica the machine joined plans on it; the other sees its instance but leaves it out, saying why", async () => {
      db = await createTestDatabase(pg.url, "dstack_pool")
      a = await startServer("127.0.0.1", { databaseUrl: db.url })
      b = await startServer("127.0.0.1", { databaseUrl: db.url, restarted: true })
      box = joinProcess(a.url, "box-p")
      await box.joined
      const [row] = await instancesUntil(b.call, "box-p.main.pool", (rows) => rows.length === 1)
      expect(row.status, "the other replica lists the machine too").toBe("idle")
      const spec = { run_spec: { run_name: "p", repo_id: "pool-e2e", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["true"] } } }
      const onA = (await a.call("/api/project/main/runs/get_plan", spec)).body
      expect(onA.job_plans[0].offers.map((o: any) => [o.backend, o.instance.name, o.instance_id])).toEqual([["pool", "box-p", row.id]])
      const onB = (await b.call("/api/project/main/runs/get_plan", spec)).body
      expect(onB.job_plans[0].offers).toEqual([])
      expect(onB.job_plans[0].no_offers_reason).toContain("pool machine box-p.main.pool is not joined to this server replica")
    }, 240_000)
  })
})

describeWithNetns(() => {
  describe("runner pool: a machine in a network namespace joins (no route from the server to it)", () => {
    let hosts: NetnsHosts
    let s: Started
    let box: ReturnType<typeof joinProcess> | undefined
    beforeAll(async () => {
      hosts = await createNetnsHosts({ count: 1 })
      s = await startServer(hosts.gateway)
    }, 120_000)
    afterAll(async () => {
      box?.child.kill("SIGKILL")
      await stop(s)
      await hosts?.down()
    }, 60_000)

    it("takes and finishes a job, its runner on the namespace's own loopback", async () => {
      const host = hosts.hosts[0]!
      box = joinProcess(s.url, "netns-box", ["ip", "netns", "exec", host.netns])
      expect(await box.joined).toMatchObject({ joined: "netns-box.main.pool" })
      await task(s.call, "pool-netns", ["echo in namespace && ip -o -4 addr show | grep -c inet"])
      const run = await waitFor(s.call, "pool-netns", finished)
      expect(run.status, JSON.stringify(run.jobs[0].job_submissions.at(-1))).toBe("done")
      expect(await logsOf(s.call, "pool-netns")).toContain("in namespace")
      // The runner listens on 127.0.0.1 inside the namespace: this machine cannot reach it.
      const port = run.jobs[0].job_submissions.at(-1).job_provisioning_data.runner_port
      const direct = await fetch(`http://${host.ip}:${port}/api/healthcheck`, { signal: AbortSignal.timeout(3_000) }).then(() => "reached", (e: Error) => e.name)
      expect(direct).not.toBe("reached")
    }, 240_000)
  })
})
