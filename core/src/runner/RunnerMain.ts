/**
 * The runner as a program. A runner *build* is a small entry file that picks its plugins and
 * calls `runnerMain`:
 *
 *   import { Runner } from "@dstack-ts/core"
 *   import executorProcess from "@dstack-ts/executor-process"
 *   await Runner.runnerMain(process.argv.slice(2), { plugins: [executorProcess] })
 *
 * Arguments: `--port N` (0: any free port; default $DSTACK_RUNNER_HTTP_PORT, else 10999),
 * `--host ADDR` (default 127.0.0.1), `--work-dir DIR` (default $DSTACK_RUNNER_WORK_DIR, else
 * ~/.dstack-ts/runner). Once it listens it prints one line on stdout, the ready line
 * `{"host":"127.0.0.1","port":41234}`, so that whoever started it (a backend, over SSH or
 * locally) learns the port it bound. SIGTERM or SIGINT closes it, aborting a job that still
 * runs, and it exits 0 (1 when closing failed). Bad arguments or refused plugins: a message on
 * stderr and exit status 2, before any ready line.
 */
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import * as v8 from "node:v8"
import type { RunningRunner, ServeRunnerOptions } from "./serveRunner.ts"
import { DEFAULT_RUNNER_PORT, serveRunner } from "./serveRunner.ts"

export const RUNNER_USAGE = "usage: runner [--port N] [--host ADDR] [--work-dir DIR]"

/** What the runner program's arguments say. */
export interface RunnerArgs {
  readonly port: number
  readonly host: string
  readonly workDir: string
}

/** Where the runner program listens and works, from its arguments; throws on bad ones. */
export const parseRunnerArgs = (
  argv: ReadonlyArray<string>,
  env: Readonly<Record<string, string | undefined>> = process.env
): RunnerArgs => {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      port: { type: "string", default: env.DSTACK_RUNNER_HTTP_PORT ?? String(DEFAULT_RUNNER_PORT) },
      host: { type: "string", default: "127.0.0.1" },
      "work-dir": { type: "string", default: env.DSTACK_RUNNER_WORK_DIR ?? path.join(os.homedir(), ".dstack-ts", "runner") }
    },
    strict: true,
    allowPositionals: false
  })
  const port = Number(values.port)
  if (!/^\d+$/.test(values.port) || port > 65535) throw new Error(`--port must be 0..65535, got ${values.port}`)
  return { port, host: values.host, workDir: path.resolve(values["work-dir"]) }
}

/**
 * The ports published for the job outside the runner (`DSTACK_RUNNER_PUBLISHED_PORTS`: JSON,
 * container port → host port, e.g. `{"8000":31234}`); throws naming the variable when malformed.
 */
export const parsePublishedPorts = (text: string | undefined): ReadonlyArray<{ readonly containerPort: number; readonly hostPort: number }> => {
  if (text === undefined || text === "") return []
  const bad = (why: string) => new Error(`DSTACK_RUNNER_PUBLISHED_PORTS: ${why} (expected JSON such as {"8000":31234}, got ${text.slice(0, 200)})`)
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    throw bad("not JSON")
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw bad("not an object")
  const isPort = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65535
  return Object.entries(parsed).map(([container, host]) => {
    if (!/^\d+$/.test(container) || !isPort(Number(container))) throw bad(`${container} is not a port`)
    if (typeof host !== "number" || !isPort(host)) throw bad(`the host port of ${container} is not a port`)
    return { containerPort: Number(container), hostPort: host }
  })
}

/** The line a runner prints once it listens: `{"host":…,"port":…}`. */
export const readyLine = (runner: Pick<RunningRunner, "host" | "port">): string =>
  `${JSON.stringify({ host: runner.host, port: runner.port })}\n`

/** Options of a runner program: its plugins, and anything else `serveRunner` takes. */
export type RunnerProgramOptions = Omit<ServeRunnerOptions, "port" | "host" | "workDir">

/**
 * Serves a runner, prints the ready line, and closes it on SIGTERM or SIGINT, then exits.
 * For commands that parse their own arguments (`dstack runner`); `runnerMain` parses argv.
 */
export const startRunnerProgram = async (args: RunnerArgs, options: RunnerProgramOptions = {}): Promise<RunningRunner> => {
  // A runner started inside the job's container (a Kubernetes pod) runs image jobs in place.
  const inContainer = options.inContainer ?? process.env.DSTACK_RUNNER_IN_CONTAINER === "1"
  const publishedPorts = options.publishedPorts ?? parsePublishedPorts(process.env.DSTACK_RUNNER_PUBLISHED_PORTS)
  const runner = await serveRunner({ ...options, ...args, inContainer, publishedPorts })
  let closing = false
  const shutdown = () => {
    if (closing) return
    closing = true
    runner.close().then(
      () => process.exit(0),
      (error: unknown) => {
        process.stderr.write(`runner: closing failed: ${error instanceof Error ? error.message : String(error)}\n`)
        process.exit(1)
      }
    )
  }
  // `on`, not `once`: Deno's node layer installs signal handlers only through `on`.
  process.on("SIGTERM", shutdown)
  process.on("SIGINT", shutdown)
  // Printed last: whoever reads this line may signal at once.
  process.stdout.write(readyLine(runner))
  return runner
}

/** True while Node.js builds a startup snapshot from this program (`node --build-snapshot`). */
const buildingSnapshot = (): boolean => {
  // Deno's node:v8 has no startupSnapshot.
  const snapshot = (v8 as { startupSnapshot?: { isBuildingSnapshot?: () => boolean } }).startupSnapshot
  return typeof snapshot?.isBuildingSnapshot === "function" && snapshot.isBuildingSnapshot()
}

/**
 * The runner program: parses `argv`, serves with the plugins' executors and repo types,
 * prints the ready line. On bad arguments or refused plugins it writes why on stderr and
 * exits with status 2.
 *
 * Run by `node --build-snapshot` (a bundled build, see RunnerLaunch's RunnerSnapshot) it serves
 * nothing: it makes itself the snapshot's main function, so that a start from the snapshot
 * (`node --snapshot-blob BLOB -- BUNDLE ARGS`) finds every module loaded and runs it then, with
 * that start's `process.argv.slice(2)` (so `argv` must be `process.argv.slice(2)`). With
 * `DSTACK_RUNNER_SNAPSHOT_CHECK=1` such a start prints `snapshot ok` and exits 0 instead: the
 * check a new snapshot passes before it is used.
 *
 * @example
 * await runnerMain(process.argv.slice(2), { plugins: [executorProcess, executorDocker] })
 */
export const runnerMain = async (argv: ReadonlyArray<string>, options: RunnerProgramOptions = {}): Promise<void> => {
  if (buildingSnapshot()) {
    v8.startupSnapshot.setDeserializeMainFunction(() => {
      if (process.env.DSTACK_RUNNER_SNAPSHOT_CHECK === "1") {
        process.stdout.write("snapshot ok\n")
        return
      }
      void runnerMain(process.argv.slice(2), options)
    })
    return
  }
  try {
    await startRunnerProgram(parseRunnerArgs(argv), options)
  } catch (error) {
    process.stderr.write(`runner: ${error instanceof Error ? error.message : String(error)}\n${RUNNER_USAGE}\n`)
    process.exit(2)
  }
}
