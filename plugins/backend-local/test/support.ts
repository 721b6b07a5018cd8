// Helpers for the local backend tests: requirements from the wire, temporary directories, fake
// runner programs and nvidia-smi binaries, and whether a process id is still alive.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Requirements } from "@dstack-ts/core"
import { Schema } from "effect"

/** Requirements as a configuration writes them (`{ gpu: 1, memory: "8GB.." }`). */
export const requirements = (resources: Record<string, unknown>, extra: Record<string, unknown> = {}): Requirements =>
  Schema.decodeUnknownSync(Requirements)({ resources, ...extra })

/** Requirements any machine that can run the tests meets. */
export const modest = () => requirements({ cpu: "1..", memory: "0.5GB..", disk: "0.5GB.." })

/**
 * The runner build the backend starts in these tests: the CLI's default one (process and
 * docker executors), by path: the backend only ever sees an entry file.
 */
export const RUNNER_ENTRY = fileURLToPath(new URL("../../../cli/src/runner.ts", import.meta.url))

export const tmpDir = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), prefix))

/** Writes an executable file and returns its path. */
export const writeScript = (dir: string, name: string, content: string): string => {
  const file = path.join(dir, name)
  fs.writeFileSync(file, content, { mode: 0o755 })
  return file
}

/** True while a process with this id exists (signal 0 checks without signalling). */
export const pidAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as { code?: string }).code === "EPERM"
  }
}

/** A submit body (snake_case, as the server sends it) for a process job with these commands. */
export const submitBody = (commands: ReadonlyArray<string>, jobName = "hello-0-0", spec: Record<string, unknown> = {}) => ({
  run: { id: "run-id", run_spec: { run_name: "hello", repo_id: "repo" } },
  job_spec: { job_name: jobName, requirements: { resources: {} }, commands, ...spec },
  cluster_info: { job_ips: [], master_job_ip: "", gpus_per_job: 0 },
  secrets: {}
})
