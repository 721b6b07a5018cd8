/**
 * One runner program running as a child process: started, awaited until it prints the address
 * it bound (the ready line, one JSON line `{"host":…,"port":…}` on stdout), and terminated with
 * SIGTERM, then SIGKILL after a grace period. Promise-based; a backend wraps it in Effects.
 */
import { type ChildProcess, spawn } from "node:child_process"
import type { Command } from "./RunnerCommand.ts"

const TAIL_BYTES = 4096

/** Why a runner did not come up. */
export type StartFailureKind = "spawn" | "exited" | "timeout" | "protocol"

export class StartFailure extends Error {
  constructor(readonly kind: StartFailureKind, message: string, override readonly cause?: unknown) {
    super(message)
  }
}

export interface Exit {
  readonly code: number | null
  readonly signal: string | null
}

/** A started runner process. */
export interface RunnerProcess {
  readonly pid: number
  readonly host: string
  readonly port: number
  /** Resolves when the process has exited. */
  readonly exited: Promise<Exit>
  readonly hasExited: () => boolean
  /** The last few KiB the runner wrote to stderr. */
  readonly stderrTail: () => string
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  readonly terminate: (graceMs: number) => Promise<void>
}

/** A started process that may not be ready yet; `terminate` works at any point. */
export interface StartingRunner {
  readonly child: ChildProcess
  readonly ready: Promise<RunnerProcess>
  readonly terminate: (graceMs: number) => Promise<void>
}

const describeExit = (exit: Exit) => (exit.signal ? `was killed by ${exit.signal}` : `exited with status ${exit.code}`)

const withTail = (message: string, tail: string) =>
  tail.trim() === "" ? `${message} (it wrote nothing to stderr)` : `${message}; its stderr ends with:\n${tail.trimEnd()}`

/**
 * Spawns the runner and waits (up to `timeoutMs`) for its address line. On any failure the
 * process is killed before `ready` rejects, so a failed start leaves nothing behind.
 */
export const startRunner = (command: Command, timeoutMs: number): StartingRunner => {
  const child = spawn(command.file, [...command.args], { stdio: ["ignore", "pipe", "pipe"] })
  let tail = ""
  let exit: Exit | undefined
  const exited = new Promise<Exit>((resolve) => {
    child.once("exit", (code, signal) => {
      exit = { code, signal }
      resolve(exit)
    })
    // A spawn failure emits `error` and no `exit`.
    child.once("error", () => {
      if (child.pid === undefined) {
        exit = { code: null, signal: null }
        resolve(exit)
      }
    })
  })
  child.stderr!.on("data", (chunk: Buffer) => {
    tail = (tail + chunk.toString("utf8")).slice(-TAIL_BYTES)
  })

  const terminate = async (graceMs: number): Promise<void> => {
    if (exit !== undefined) return
    child.kill("SIGTERM")
    const inTime = await Promise.race([exited.then(() => true), delay(graceMs).then(() => false)])
    if (!inTime && exit === undefined) {
      child.kill("SIGKILL")
      await exited
    }
  }

  const ready = new Promise<RunnerProcess>((resolve, reject) => {
    let stdout = ""
    let settled = false
    const fail = (failure: StartFailure) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      // Kill first, so the message carries everything the runner had to say.
      void terminate(0).then(() => {
        failure.message = withTail(failure.message, tail)
        reject(failure)
      })
    }
    const timer = setTimeout(
      () => fail(new StartFailure("timeout", `the runner did not report its address within ${Math.round(timeoutMs / 100) / 10}s`)),
      timeoutMs
    )
    child.once("error", (error) => {
      if (child.pid === undefined) fail(new StartFailure("spawn", `cannot start ${command.file}: ${error.message}`, error))
    })
    void exited.then((e) => {
      if (child.pid !== undefined) fail(new StartFailure("exited", `the runner ${describeExit(e)} before it was ready`))
    })
    const onData = (chunk: Buffer) => {
      stdout += chunk.toString("utf8")
      const newline = stdout.indexOf("\n")
      if (newline < 0 || settled) return
      child.stdout!.off("data", onData)
      // Keep draining stdout so the runner never blocks on a full pipe.
      child.stdout!.resume()
      const line = stdout.slice(0, newline).trim()
      const address = parseAddress(line)
      if (address === undefined) {
        fail(new StartFailure("protocol", `the runner printed ${JSON.stringify(line.slice(0, 200))} instead of its address`))
        return
      }
      settled = true
      clearTimeout(timer)
      resolve({
        pid: child.pid!,
        host: address.host,
        port: address.port,
        exited,
        hasExited: () => exit !== undefined,
        stderrTail: () => tail,
        terminate
      })
    }
    child.stdout!.on("data", onData)
  })
  return { child, ready, terminate }
}

/** `{"host":"127.0.0.1","port":41234}`, as the runner program prints it. */
export const parseAddress = (line: string): { host: string; port: number } | undefined => {
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch {
    return undefined
  }
  if (typeof value !== "object" || value === null) return undefined
  const { host, port } = value as { host?: unknown; port?: unknown }
  return typeof host === "string" && typeof port === "number" && Number.isInteger(port) && port > 0 ? { host, port } : undefined
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref?.())
