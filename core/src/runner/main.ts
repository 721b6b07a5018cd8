/**
 * The runner as a program: `main.ts --port 0 --host 127.0.0.1 --work-dir DIR`. Once it
 * listens it prints one JSON line, `{"host":…,"port":…}`, so that whoever started it (a
 * backend, over SSH or locally) learns the port it bound. SIGTERM or SIGINT closes it,
 * aborting a job that still runs.
 */
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { DEFAULT_RUNNER_PORT, serveRunner } from "./serveRunner.ts"

const USAGE = "usage: runner [--port N] [--host ADDR] [--work-dir DIR]"

const main = async (argv: ReadonlyArray<string>): Promise<void> => {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      port: { type: "string", default: process.env.DSTACK_RUNNER_HTTP_PORT ?? String(DEFAULT_RUNNER_PORT) },
      host: { type: "string", default: "127.0.0.1" },
      "work-dir": { type: "string", default: process.env.DSTACK_RUNNER_WORK_DIR ?? path.join(os.homedir(), ".dstack-ts", "runner") }
    },
    strict: true
  })
  const port = Number(values.port)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be 0..65535, got ${values.port}`)
  const runner = await serveRunner({ port, host: values.host, workDir: path.resolve(values["work-dir"]) })
  let closing = false
  const shutdown = () => {
    if (closing) return
    closing = true
    runner.close().then(
      () => process.exit(0),
      () => process.exit(1)
    )
  }
  // `on`, not `once`: Deno's node layer installs signal handlers only through `on`.
  process.on("SIGTERM", shutdown)
  process.on("SIGINT", shutdown)
  // Printed last: whoever reads this line may signal at once.
  process.stdout.write(`${JSON.stringify({ host: runner.host, port: runner.port })}\n`)
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(`runner: ${error instanceof Error ? error.message : String(error)}\n${USAGE}\n`)
  process.exit(2)
})
