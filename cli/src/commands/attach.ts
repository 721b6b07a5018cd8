// `dstack attach RUN`: waits for the run to start, forwards its ports to localhost through the
// server (any backend; no key to the job's host needed), writes the `ssh RUN` alias when the
// server runs an SSH proxy (and prints a dev environment's IDE link), and keeps them (following
// the logs with --logs) until Ctrl-C or the run ends, which it says.
import { defineCommand } from "citty"
import { CliError, clientFor, globalArgs } from "../context.ts"
import { sshAccessLines } from "../sshAccess.ts"
import { print, success, warn, withSpinner } from "../ui.ts"

/** How often the run's status is read while attached. */
const POLL_MS = 1_000

export default defineCommand({
  meta: { name: "attach", description: "Forward a run's ports to localhost until Ctrl-C or the run ends" },
  args: {
    run: { type: "positional", description: "The run name", required: true, valueHint: "run_name" },
    logs: { type: "boolean", description: "Also follow the run's logs" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const client = await clientFor()
    const run = await client.runs.get(args.run)
    if (run === undefined) throw new CliError(`Run ${args.run} does not exist in project ${client.project}`)
    if (run.finished) throw new CliError(`Run ${args.run} is ${run.status}: there is nothing to attach to`)
    const ports = await withSpinner(`Waiting for ${args.run} to run`, () =>
      run.attach({ onError: (error) => warn(error.message) })
    ).catch((error: Error) => {
      throw new CliError(run.finished ? `Run ${args.run} ended (${run.status}) before it could be attached to` : `Cannot attach to ${args.run}: ${error.message}`)
    })
    const entries = Object.entries(ports)
    success(entries.length === 0 ? `Attached to ${args.run} (it exposes no ports)` : `Attached to ${args.run}`)
    for (const [jobPort, localPort] of entries) print(`  ${jobPort} → http://127.0.0.1:${localPort}`)
    for (const line of await sshAccessLines(run)) print(line)
    let interrupted = false
    const onSignal = new Promise<void>((resolve) => {
      process.once("SIGINT", resolve)
      process.once("SIGTERM", resolve)
    }).then(() => (interrupted = true))
    const ended = (async () => {
      if (args.logs) {
        for await (const chunk of run.logs()) {
          if (interrupted) break
          process.stdout.write(chunk)
        }
      }
      for (;;) {
        if (interrupted) return
        // A server that is away for a moment (restarting) is waited for: the tunnels reconnect.
        const refreshed = await run.refresh().then(() => true, () => false)
        if (refreshed && run.finished) return
        await new Promise((r) => setTimeout(r, POLL_MS))
      }
    })()
    await Promise.race([onSignal, ended])
    await run.detach()
    if (!interrupted && run.finished) {
      const reason = run.entity.terminationReason
      // A run that failed because its job was ended (e.g. a dev environment's inactivity_duration)
      // also names the job's reason.
      const jobReason = reason === "job_failed" ? run.entity.jobs.map((j) => j.jobSubmissions.at(-1)?.terminationReason).find((r) => r != null) : undefined
      print(`Run ${args.run} ended (${run.status}${reason ? `, ${reason}` : ""}${jobReason ? `; job: ${jobReason}` : ""}): its ports are no longer forwarded`)
    } else {
      print(`Detached from ${args.run}; it keeps running`)
    }
    process.exit(0)
  }
})
