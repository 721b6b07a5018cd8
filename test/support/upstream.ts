// The upstream dstack Python client (0.21.2) for wire-compatibility tests: found in
// `shared/upstream-client` beside the checkout or above it (or at $DSTACK_UPSTREAM_CLIENT), made
// importable by its `setup.sh` (no PyPI), and run as `python` with its environment.
import { execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"

/** The folder of the upstream client, or undefined when this machine has none. */
export const upstreamClientDir = (): string | undefined => {
  const fromEnv = process.env.DSTACK_UPSTREAM_CLIENT
  if (fromEnv) return fs.existsSync(path.join(fromEnv, "setup.sh")) ? fromEnv : undefined
  // `../shared/upstream-client` from the checkout, or from any folder above it (a worktree).
  for (let dir = process.cwd(); ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, "shared", "upstream-client")
    if (fs.existsSync(path.join(candidate, "setup.sh"))) return candidate
    if (path.dirname(dir) === dir) return undefined
  }
}

let environment: Promise<Record<string, string>> | undefined

/** `setup.sh`'s exports (DSTACK_PY, PYTHONPATH …), run once per test file. */
export const upstreamEnv = (dir: string): Promise<Record<string, string>> =>
  (environment ??= new Promise((resolve, reject) =>
    execFile("bash", [path.join(dir, "setup.sh")], { maxBuffer: 1 << 20 }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`${dir}/setup.sh failed: ${stderr || error.message}`))
      const vars: Record<string, string> = {}
      for (const m of stdout.matchAll(/^export ([A-Z_]+)=(.*)$/gm)) vars[m[1]!] = m[2]!
      if (!vars.DSTACK_PY) return reject(new Error(`${dir}/setup.sh printed no DSTACK_PY:\n${stdout}`))
      resolve(vars)
    })
  ))

export interface PythonResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs the upstream client's Python with `args`, `input` on stdin and `home` as HOME. */
export const runPython = (
  env: Record<string, string>,
  args: ReadonlyArray<string>,
  options: { readonly input?: string; readonly home?: string; readonly cwd?: string } = {}
): Promise<PythonResult> =>
  new Promise((resolve, reject) => {
    const child = spawn(env.DSTACK_PY!, ["-W", "ignore", ...args], {
      cwd: options.cwd ?? "/tmp",
      env: { ...process.env, ...env, ...(options.home ? { HOME: options.home } : {}), NO_COLOR: "1", COLUMNS: "200", DSTACK_CLI_LOG_LEVEL: "error" }
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(options.input ?? "")
  })
