// `dstack runner`: the default runner build (cli/src/runner.ts) as a command — what a backend
// starts on an instance. It serves the runner API (submit, upload_code, run, pull,
// logs_stream, stop, metrics), one job at a time, with the process and docker executors, and
// prints its ready line `{"host":…,"port":…}` once it listens; SIGTERM or SIGINT stops it.
// `dstack runner join` (runnerJoin.ts) joins this machine to a project's runner pool instead.
import { defineCommand } from "citty"
import { globalArgs, usageError } from "../context.ts"

export default defineCommand({
  meta: { name: "runner", description: "Run the runner agent that executes jobs on this host" },
  args: {
    host: { type: "string", description: "The address to bind", default: "127.0.0.1", valueHint: "host" },
    port: { type: "string", description: "The port (0: any free port)", default: "10999", valueHint: "port" },
    "work-dir": { type: "string", description: "Where jobs' code and files go (default: a new temporary directory)", valueHint: "path" },
    ...globalArgs
  },
  subCommands: { join: () => import("./runnerJoin.ts").then((m) => m.default) },
  run: async ({ args }) => {
    // citty runs a command's `run` after its sub-command: `dstack runner join` is done here.
    if (args._[0] === "join") return
    const port = Number(args.port)
    if (!/^\d+$/.test(args.port) || port > 65535) throw usageError(`--port: "${args.port}" is not a port number (0–65535)`)
    const { mkdtempSync } = await import("node:fs")
    const { tmpdir } = await import("node:os")
    const { join, resolve } = await import("node:path")
    const { Runner } = await import("@dstack-ts/core")
    const { runnerPlugins } = await import("../runnerPlugins.ts")
    const workDir = resolve(args["work-dir"] ?? mkdtempSync(join(tmpdir(), "dstack-runner-")))
    await Runner.startRunnerProgram({ host: args.host, port, workDir }, { plugins: runnerPlugins })
    // The runner closes and exits on SIGTERM or SIGINT; until then the command runs.
    await new Promise<never>(() => {})
  }
})
