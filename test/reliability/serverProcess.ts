// Server processes for the reliability tests that kill them: test/support/fault-server.ts
// started as a Node child (also when the tests run under Deno), its port read from its first
// line; helpers to call its API, wait for runs, and reap the runners left under a work dir.
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
const ENTRY = path.join(root, "test/support/fault-server.ts")
const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined"

export interface ServerProcess {
  readonly name: string
  readonly process: ChildProcess
  readonly port: number
  readonly output: Array<string>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/**
 * Starts a server and waits for its port line. `env` adds to the environment (FAULT_SERVER_DIR,
 * FAULT_WORK_DIR, DSTACK_FAULT, …).
 */
export const startServer = (name: string, env: Record<string, string>, timeoutMs = 180_000): Promise<ServerProcess> => {
  const child = spawn(isDeno ? "node" : process.execPath, ["--import", "tsx", ENTRY], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const output: Array<string> = []
  child.stderr!.setEncoding("utf8")
  child.stderr!.on("data", (chunk: string) => output.push(chunk))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal }))
  )
  return new Promise<ServerProcess>((resolve, reject) => {
    let out = ""
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`server ${name} did not start in ${timeoutMs} ms; output: ${output.join("").slice(-2000)}`))
    }, timeoutMs)
    child.stdout!.setEncoding("utf8")
    const onData = (chunk: string) => {
      out += chunk
      // Log lines may come first: the port line is the one JSON object with a port.
      const lines = out.split("\n")
      out = lines.pop() ?? ""
      for (const line of lines) {
        const port = /^\{"port":(\d+)\}$/.exec(line.trim())?.[1]
        if (port === undefined) {
          output.push(`${line}\n`)
          continue
        }
        clearTimeout(timer)
        child.stdout!.off("data", onData)
        child.stdout!.on("data", (more: string) => output.push(more))
        resolve({ name, process: child, port: Number(port), output, exited })
        return
      }
    }
    child.stdout!.on("data", onData)
    void exited.then((e) => {
      clearTimeout(timer)
      reject(new Error(`server ${name} exited (${e.signal ?? e.code}) before it listened; output: ${output.join("").slice(-2000)}`))
    })
  })
}

/** SIGTERM, then SIGKILL if it is still there after a while. */
export const stopServer = async (server: ServerProcess | undefined) => {
  if (!server || server.process.exitCode !== null || server.process.signalCode !== null) return
  server.process.kill("SIGTERM")
  const inTime = await Promise.race([server.exited.then(() => true), sleep(15_000).then(() => false)])
  if (!inTime) {
    server.process.kill("SIGKILL")
    await server.exited
  }
}

export interface Answer {
  readonly status: number
  readonly body: any
}

/** POSTs to the server's API; a connection that breaks (the server died) answers status 0. */
export const call = async (port: number, token: string, route: string, body?: unknown): Promise<Answer> => {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${route}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}`, connection: "close" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000)
    })
    const text = await res.text()
    return { status: res.status, body: text === "" ? undefined : JSON.parse(text) }
  } catch (error) {
    return { status: 0, body: String(error) }
  }
}

export const taskSpec = (runName: string, commands: ReadonlyArray<string>, extra: Record<string, unknown> = {}) => ({
  plan: {
    run_spec: {
      run_name: runName,
      repo_id: "reliability",
      repo_data: { repo_type: "virtual" },
      configuration: { type: "task", commands, resources: { cpu: "1..", memory: "100MB..", disk: "100MB.." }, ...extra }
    }
  }
})

export const finished = (run: any) => ["done", "failed", "terminated"].includes(run?.status)

/** Every run of the project `main`, by name (runs/list pages through them). */
export const listRuns = async (port: number, token: string): Promise<Map<string, any>> => {
  const all = new Map<string, any>()
  let prev: any
  for (;;) {
    const body: Record<string, unknown> = { project_name: "main", limit: 100, ascending: true }
    if (prev !== undefined) Object.assign(body, { prev_submitted_at: prev.submitted_at, prev_run_id: prev.id })
    const res = await call(port, token, "/api/runs/list", body)
    if (res.status !== 200) throw new Error(`runs/list answered ${res.status}: ${JSON.stringify(res.body).slice(0, 500)}`)
    const page = res.body as Array<any>
    for (const run of page) all.set(run.run_spec.run_name, run)
    if (page.length < 100) return all
    prev = page.at(-1)
  }
}

/** Waits until every named run has finished; answers them by name. */
export const waitAllFinished = async (port: number, token: string, names: ReadonlyArray<string>, timeoutMs: number) => {
  const start = Date.now()
  let open: Array<string> = [...names]
  let runs = new Map<string, any>()
  while (Date.now() - start < timeoutMs) {
    runs = await listRuns(port, token)
    open = names.filter((name) => !finished(runs.get(name)))
    if (open.length === 0) return runs
    // Listing a thousand runs is work for the server too: poll less often the more there are.
    await sleep(Math.max(300, names.length * 2))
  }
  const sample = open.slice(0, 5).map((n) => `${n}: ${runs.get(n)?.status} ${JSON.stringify(runs.get(n)?.jobs?.[0]?.job_submissions?.at(-1) ?? null).slice(0, 400)}`)
  throw new Error(`${open.length} runs not finished in ${timeoutMs} ms: ${sample.join("; ")}`)
}

export const logsOf = async (port: number, token: string, runName: string): Promise<string> => {
  const res = await call(port, token, "/api/project/main/logs/poll", { run_name: runName, limit: 1000 })
  if (res.status !== 200) throw new Error(`logs/poll ${runName} answered ${res.status}: ${JSON.stringify(res.body).slice(0, 300)}`)
  return (res.body.logs as Array<any>).map((l) => l.message as string).join("")
}

/** Processes whose command line names `dir`: the runners (and their jobs) started under it. */
export const processesUnder = (dir: string): Array<number> => {
  const pids: Array<number> = []
  for (const entry of fs.readdirSync("/proc")) {
    const pid = Number(entry)
    if (!Number.isInteger(pid) || pid === process.pid) continue
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir)) pids.push(pid)
    } catch {
      // gone already
    }
  }
  return pids
}

/** SIGKILLs every process whose command line names `dir` (a directory, or any part of a path) and waits until they are gone. */
export const reapUnder = async (dir: string) => {
  for (const pid of processesUnder(dir)) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // gone already
    }
  }
  const deadline = Date.now() + 5_000
  while (processesUnder(dir).length > 0 && Date.now() < deadline) await sleep(50)
}

/** A suite's directory gone, with every process started under it first ("" = never made). */
export const removeUnder = async (dir: string) => {
  if (dir === "") return
  await reapUnder(dir)
  fs.rmSync(dir, { recursive: true, force: true })
}

/** A seeded pseudo-random generator (mulberry32), for sampled matrices that can be replayed. */
export const seeded = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
