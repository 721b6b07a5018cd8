/**
 * How to start the runner program as an OS process on the runtime the server runs on. One
 * function per runtime with the same shape; the backend takes one, chosen at the edge.
 */
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { pathToFileURL } from "node:url"

/** A program and its arguments. */
export interface Command {
  readonly file: string
  readonly args: ReadonlyArray<string>
}

/** Turns the runner entry file and the runner's own arguments into the command to spawn. */
export type RunnerCommand = (entry: string, args: ReadonlyArray<string>) => Command

const require = createRequire(import.meta.url)

const isTypeScript = (entry: string) => /\.[cm]?tsx?$/.test(entry)

/**
 * Node.js: `node --import tsx entry …` for TypeScript sources (tsx resolved from this package,
 * so the server's working directory does not matter), `node entry …` for a bundled runner.
 */
export const node: RunnerCommand = (entry, args) =>
  isTypeScript(entry)
    ? { file: process.execPath, args: ["--import", pathToFileURL(require.resolve("tsx")).href, entry, ...args] }
    : { file: process.execPath, args: [entry, ...args] }

/** The nearest `deno.json` above `from`, so that the runner sees the workspace's import setup. */
const denoConfigAbove = (from: string): string | undefined => {
  for (let dir = path.dirname(from); ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, "deno.json")
    if (fs.existsSync(candidate)) return candidate
    if (path.dirname(dir) === dir) return undefined
  }
}

/** Deno: `deno run -A [--config deno.json] entry …` (`process.execPath` is the deno binary). */
export const deno: RunnerCommand = (entry, args) => {
  const config = denoConfigAbove(entry)
  return { file: process.execPath, args: ["run", "-A", ...(config ? ["--config", config] : []), entry, ...args] }
}

/** The command of the runtime this code runs on. */
export const forRuntime = (): RunnerCommand => ("Deno" in globalThis ? deno : node)
