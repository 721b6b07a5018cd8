/**
 * How to start a runner build as an OS process on the runtime the server runs on. One
 * function per runtime with the same shape; a backend takes one, chosen at the edge.
 */
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

/** A program and its arguments. */
export interface Command {
  readonly file: string
  readonly args: ReadonlyArray<string>
}

/** Turns the runner entry file and the runner's own arguments into the command to spawn. */
export type RunnerCommand = (entry: string, args: ReadonlyArray<string>) => Command

/** True for a TypeScript source (`.ts`, `.mts`, `.cts`, `.tsx`). */
export const isTypeScript = (entry: string): boolean => /\.[cm]?tsx?$/.test(entry)

/** tsx, from where the entry resolves it, else from core; an Error saying what to do when neither does. */
const resolveTsx = (entry: string): string => {
  for (const from of [entry, fileURLToPath(import.meta.url)]) {
    try {
      return createRequire(from).resolve("tsx")
    } catch {
      // not resolvable from there
    }
  }
  throw new Error(`cannot run the TypeScript runner entry ${entry} on Node: tsx is not installed where it or @dstack-ts/core can import it; bundle the entry (RunnerLaunch.bundleRunner) or install tsx`)
}

/**
 * Node.js: `node --import tsx entry …` for TypeScript sources (tsx resolved from the entry,
 * so the server's working directory does not matter), `node entry …` for a bundled runner.
 */
export const node: RunnerCommand = (entry, args) =>
  isTypeScript(entry)
    ? { file: process.execPath, args: ["--import", pathToFileURL(resolveTsx(entry)).href, entry, ...args] }
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
