// `dstack attach RUN`: waits for the run to start, forwards its ports to localhost and keeps
// them forwarded (following the logs with --logs) until Ctrl-C or the run ends.
import { defineCommand } from "citty"
import { CliError, clientFor, globalArgs } from "../context.ts"
import { print, success, withSpinner } from "../ui.ts"

export default defineCommand({
  meta: { name: "attach", description: "Forward a run's ports to localhost until Ctrl-C" },
  args: {
    run: { type: "positional", description: "The run name", required: true, valueHint: "run_name" },
    logs: { type: "boolean", description: "Also follow the run's logs" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const client = await clientFor()
    const run = await client.runs.get(args.run)
    if (run === undefined) throw new CliError(`Run ${args.run} does not exist in project ${client.project}`)
    const ports = await withSpinner(`Waiting for ${args.run} to run`, () => run.attach())
    const entries = Object.entries(ports)
    success(entries.length === 0 ? `Attached to ${args.run} (it exposes no ports)` : `Attached to ${args.run}`)
    for (const [jobPort, localPort] of entries) print(`  ${jobPort} → http://127.0.0.1:${localPort}`)
    const interrupted = new Promise<void>((resolve) => {
      process.once("SIGINT", resolve)
      process.once("SIGTERM", resolve)
    })
    let interruptedAlready = false
    const ended = (async () => {
      if (args.logs) {
        for await (const chunk of run.logs()) {
          if (interruptedAlready) break
          process.stdout.write(chunk)
        }
      }
      while (!interruptedAlready && !(await run.refresh()).finished) await new Promise((r) => setTimeout(r, 1000))
    })()
    await Promise.race([interrupted.then(() => (interruptedAlready = true)), ended])
    await run.detach()
    print(`Detached from ${args.run}${run.finished ? ` (it is ${run.status})` : ""}`)
  }
})
