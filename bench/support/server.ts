// Starts and stops the processes a benchmark talks to: the dstack-ts server (server-main.ts)
// and the bare node:http baseline (bare-main.ts), each its own Node process on a loopback
// port. BENCH_SERVER_CPU_PROF=<dir> starts the server with --cpu-prof into that directory
// (BENCH_SERVER_CPU_PROF_INTERVAL=<µs>: its sampling interval, default 1000).
// BENCH_SERVER_RUNTIME=deno starts the server under Deno instead (Deno.serve as its listener).
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { BenchServerOptions } from "./server-main.ts"

const here = path.dirname(fileURLToPath(import.meta.url))

export interface Child {
  readonly url: string
  readonly pid: number
  readonly proc: ChildProcess
  /** Resident set size now, in MiB (from /proc). */
  readonly rssMiB: () => number
  readonly stop: () => Promise<void>
}

export const rssOf = (pid: number): number => {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))
    return m ? Number(m[1]) / 1024 : Number.NaN
  } catch {
    return Number.NaN
  }
}

/** Deno from npm (`deno` in devDependencies): BENCH_SERVER_RUNTIME=deno runs the server under it. */
const DENO = path.resolve(here, "../../node_modules/deno/deno")

const startChild = (file: string, env: Record<string, string>, label: string, timeoutMs = 120_000): Promise<Child> =>
  new Promise((resolve, reject) => {
    const prof = process.env.BENCH_SERVER_CPU_PROF
    const interval = process.env.BENCH_SERVER_CPU_PROF_INTERVAL
    const runtime = process.env.BENCH_SERVER_RUNTIME ?? "node"
    if (runtime !== "node" && runtime !== "deno") return reject(new Error(`BENCH_SERVER_RUNTIME: ${JSON.stringify(runtime)} is not a runtime the bench starts; pick node or deno`))
    if (runtime === "deno" && prof) return reject(new Error("BENCH_SERVER_CPU_PROF profiles a Node server (--cpu-prof); it cannot be used with BENCH_SERVER_RUNTIME=deno"))
    const onDeno = label === "server" && runtime === "deno"
    // --expose-gc: /bench/memory?gc=1 measures what is held, not what awaits collection.
    const args = onDeno
      ? ["run", "-A", ...(label === "server" ? ["--v8-flags=--expose-gc"] : []), file]
      : ["--import", "tsx", ...(label === "server" ? ["--expose-gc"] : []), ...(prof && label === "server" ? ["--cpu-prof", `--cpu-prof-dir=${prof}`, ...(interval ? [`--cpu-prof-interval=${interval}`] : [])] : []), file]
    const proc = spawn(onDeno ? DENO : process.execPath, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    const timer = setTimeout(() => {
      proc.kill("SIGKILL")
      reject(new Error(`${label} did not start in ${timeoutMs} ms: ${err.slice(-2000)}`))
    }, timeoutMs)
    proc.stderr!.on("data", (d: Buffer) => {
      err += d.toString()
      if (process.env.BENCH_VERBOSE) process.stderr.write(d)
    })
    proc.on("exit", (code) => {
      clearTimeout(timer)
      reject(new Error(`${label} exited with ${code} before listening: ${err.slice(-2000)}`))
    })
    proc.stdout!.on("data", (d: Buffer) => {
      out += d.toString()
      // The first line that is the {"port": …} object (the server's log lines may come first).
      const line = out.split("\n").slice(0, -1).find((l) => l.startsWith("{\"port\""))
      if (line === undefined) return
      clearTimeout(timer)
      proc.stdout!.removeAllListeners("data")
      if (process.env.BENCH_VERBOSE) proc.stdout!.on("data", (d: Buffer) => process.stderr.write(d))
      proc.stdout!.resume()
      proc.removeAllListeners("exit")
      const { port } = JSON.parse(line) as { port: number }
      const exited = new Promise<void>((r) => proc.once("exit", () => r()))
      resolve({
        url: `http://127.0.0.1:${port}`,
        pid: proc.pid!,
        proc,
        rssMiB: () => rssOf(proc.pid!),
        stop: async () => {
          if (proc.exitCode !== null || proc.signalCode !== null) return
          proc.kill("SIGTERM")
          const killer = setTimeout(() => proc.kill("SIGKILL"), 20_000)
          await exited
          clearTimeout(killer)
        }
      })
    })
  })

export const TOKEN = "bench-admin-token"

export interface StartServerOptions {
  readonly maxInstances?: number
  readonly prefillRuns?: number
  readonly databaseUrl?: string | undefined
  /** `noop`: the bench's no-op backend (./noop-plugin.ts) instead of `local`. */
  readonly backend?: "local" | "noop"
  readonly noop?: BenchServerOptions["noop"]
  /** Submitted runs stored before the server starts (see server-main.ts). */
  readonly queuedRuns?: number
}

export interface BenchServer extends Child {
  readonly token: string
  readonly dir: string
}

/** A fresh dstack-ts server in its own directory (removed on stop). */
export const startServer = async (options: StartServerOptions = {}): Promise<BenchServer> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-bench-"))
  const serverOptions: BenchServerOptions = {
    dir,
    token: TOKEN,
    ...(options.databaseUrl ? { databaseUrl: options.databaseUrl } : {}),
    ...(options.maxInstances ? { maxInstances: options.maxInstances } : {}),
    ...(options.prefillRuns ? { prefillRuns: options.prefillRuns } : {}),
    ...(options.backend ? { backend: options.backend } : {}),
    ...(options.noop ? { noop: options.noop } : {}),
    ...(options.queuedRuns ? { queuedRuns: options.queuedRuns } : {})
  }
  try {
    const child = await startChild(path.join(here, "server-main.ts"), { BENCH_SERVER: JSON.stringify(serverOptions) }, "server", 600_000)
    return {
      ...child,
      token: TOKEN,
      dir,
      stop: async () => {
        await child.stop()
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true })
    throw error
  }
}

/** A bare node:http server answering each path with fixed bytes (written to a file first). */
export const startBare = async (bodies: Record<string, string>): Promise<Child> => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "dstack-bench-bare-")), "bodies.json")
  fs.writeFileSync(file, JSON.stringify(bodies))
  const child = await startChild(path.join(here, "bare-main.ts"), { BENCH_BARE_BODIES: file }, "bare")
  return {
    ...child,
    stop: async () => {
      await child.stop()
      fs.rmSync(path.dirname(file), { recursive: true, force: true })
    }
  }
}

/** The services bench's reference proxy (ref-proxy-main.ts) in front of `target` (host:port). */
export const startRefProxy = (target: string): Promise<Child> => startChild(path.join(here, "ref-proxy-main.ts"), { BENCH_REF_TARGET: target }, "reference proxy")

/**
 * The services bench's socket-level reference (socket-proxy-main.ts): the barest forwarder that
 * reads HTTP/1.1 on sockets itself, in front of `target` (host:port).
 */
export const startSocketProxy = (target: string): Promise<Child> => startChild(path.join(here, "socket-proxy-main.ts"), { BENCH_REF_TARGET: target }, "socket-level reference proxy")

/** A server's process.memoryUsage() (bench/support/server-main.ts's /bench/memory). */
export interface ServerMemory { readonly rss: number; readonly heapTotal: number; readonly heapUsed: number; readonly external: number; readonly arrayBuffers: number }

/** GET of one of the bench server's own endpoints (server-main.ts); undefined if it fails. */
export const benchJson = async <A>(server: { readonly url: string }, path: string): Promise<A | undefined> => {
  try {
    const res = await fetch(`${server.url}${path}`)
    return res.ok ? ((await res.json()) as A) : undefined
  } catch {
    return undefined
  }
}

const mib = (bytes: number) => (bytes / 1048576).toFixed(0)

/** `rss …, V8 heap … used of …, external … (array buffers …) MiB`. */
export const memNote = (m: ServerMemory | undefined): string =>
  m === undefined ? "–" : `rss ${mib(m.rss)}, V8 heap ${mib(m.heapUsed)} used of ${mib(m.heapTotal)}, external ${mib(m.external)} (array buffers ${mib(m.arrayBuffers)}) MiB`
