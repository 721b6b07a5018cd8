// Child processes that run a TypeScript script under the same runtime as the tests (Node
// through tsx, or Deno), with their stdout lines collected: for tests that kill or race
// processes (durability, multi-process claims).
import { spawn, type ChildProcess } from "node:child_process"

export interface Child {
  readonly process: ChildProcess
  /** Every stdout line so far. */
  readonly lines: Array<string>
  readonly stderr: Array<string>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Resolves once a line matching `predicate` has been printed. */
  readonly waitFor: (predicate: (line: string) => boolean, timeoutMs?: number) => Promise<void>
}

/** Runs a TypeScript script in a new process of the current runtime (Node through tsx, or Deno). */
export const spawnScript = (script: string, env: Record<string, string>): Child => {
  const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined"
  const args = isDeno ? ["run", "-A", script] : ["--import", "tsx", script]
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
  const lines: Array<string> = []
  const stderr: Array<string> = []
  const waiters = new Set<() => void>()
  let buffer = ""
  child.stdout!.setEncoding("utf8")
  child.stdout!.on("data", (chunk: string) => {
    buffer += chunk
    const parts = buffer.split("\n")
    buffer = parts.pop() ?? ""
    lines.push(...parts)
    for (const w of waiters) w()
  })
  child.stderr!.setEncoding("utf8")
  child.stderr!.on("data", (chunk: string) => stderr.push(chunk))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => {
      for (const w of waiters) w()
      resolve({ code, signal })
    })
  )
  const waitFor = (predicate: (line: string) => boolean, timeoutMs = 60_000) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (lines.some(predicate)) {
          waiters.delete(check)
          clearTimeout(timer)
          resolve()
        } else if (child.exitCode !== null || child.signalCode !== null) {
          waiters.delete(check)
          clearTimeout(timer)
          reject(new Error(`${script} exited before the expected line; stderr: ${stderr.join("")}`))
        }
      }
      const timer = setTimeout(() => {
        waiters.delete(check)
        reject(new Error(`timed out waiting for a line from ${script}; lines: ${lines.slice(-5).join(" | ")}; stderr: ${stderr.join("")}`))
      }, timeoutMs)
      waiters.add(check)
      check()
    })
  return { process: child, lines, stderr, exited, waitFor }
}
