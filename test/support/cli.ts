// The real `dstack` CLI as end-to-end tests drive it: a child process of this Node with the
// environment the test gives, its output collected; and a project directory written from texts.
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { inject } from "vitest"

/**
 * The `dstack` command's entry file, spawned with this runtime: on Node the workspace built in the
 * installed layout (test/support/globalSetup.ts), on Deno the workspace's bin; the workspace's
 * bin (sources through tsx) when a run has no such setup.
 */
export const CLI: string = inject("dstackCli") ?? path.resolve("cli/bin/dstack.mjs")

export interface CliResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** A function that runs `dstack ARGS` in `cwd` with the environment `env()` answers at the call. */
export const cliRunner = (env: () => NodeJS.ProcessEnv) => (args: ReadonlyArray<string>, cwd: string) =>
  new Promise<CliResult>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env: env() })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })

/** `root/name` with each file of `texts` (path → text) written in it; the directory. */
export const writeProject = (root: string, name: string, texts: Record<string, string>): string => {
  const dir = path.join(root, name)
  for (const [file, text] of Object.entries(texts)) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true })
    fs.writeFileSync(path.join(dir, file), text)
  }
  return dir
}
