// `dstack runner`: the runner agent on its own — what a backend starts on an instance. It
// serves the runner API (submit, upload_code, run, pull, logs_stream, stop, metrics) for one
// job at a time and prints one JSON line with its address once it listens.
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
  run: async ({ args }) => {
    const port = Number(args.port)
    if (!/^\d+$/.test(args.port) || port > 65535) throw usageError(`--port: "${args.port}" is not a port number (0–65535)`)
    const { mkdtempSync } = await import("node:fs")
    const { tmpdir } = await import("node:os")
    const { join } = await import("node:path")
    const { Runner } = await import("@dstack-ts/core")
    const workDir = args["work-dir"] ?? mkdtempSync(join(tmpdir(), "dstack-runner-"))
    const running = await Runner.serveRunner({ host: args.host, port, workDir })
    process.stdout.write(`${JSON.stringify({ host: running.host, port: running.port })}\n`)
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve)
      process.once("SIGTERM", resolve)
    })
    await running.close()
  }
})
