// `dstack runner join SERVER --token T`: this machine joins a project's runner pool. It starts
// the default runner build on 127.0.0.1 (a free port), measures the machine (CPUs, memory,
// disk, GPUs), and keeps one outbound WebSocket to the server with heartbeats; the server
// reaches the runner and jobs' ports through it, so nothing here listens for the network.
// A dropped connection (the server restarted, the network went) is joined again by itself, with
// exponential backoff and jitter, as the same machine: its runner and the job on it carry on.
// It runs until SIGINT/SIGTERM (leaves the pool, exit 0) or the server refuses or removes the
// machine (exit 1, with why).
import { defineCommand } from "citty"
import { CliError, globalArgs, usageError } from "../context.ts"

const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/

export default defineCommand({
  meta: {
    name: "join",
    description:
      "Join this machine to a project's runner pool: it connects out to SERVER (no inbound port needed), " +
      "reports its CPUs, memory, disk and GPUs, heartbeats, and runs the jobs placed on it (docs/runner-pool.md)"
  },
  args: {
    ...globalArgs,
    server: { type: "positional", description: "The server's URL, e.g. http://dstack.example:3000", required: true, valueHint: "url" },
    token: { type: "string", description: "A token of a member of the project (default: DSTACK_TOKEN)", valueHint: "token" },
    project: { type: "string", description: "The project whose pool to join (default: DSTACK_PROJECT, else main)", valueHint: "name" },
    name: { type: "string", description: "The machine's name in the pool (default: this host's name)", valueHint: "name" },
    "work-dir": { type: "string", description: "Where jobs' code and files go (default: a new temporary directory)", valueHint: "path" },
    heartbeat: { type: "string", description: "Seconds between heartbeats; the server drops a machine silent for three", default: "5", valueHint: "seconds" }
  },
  run: async ({ args }) => {
    const token = args.token ?? process.env.DSTACK_TOKEN
    if (token === undefined || token === "") throw usageError("--token: give a token of a member of the project (or set DSTACK_TOKEN)")
    const project = args.project ?? process.env.DSTACK_PROJECT ?? "main"
    let server: URL
    try {
      server = new URL(args.server)
      if (server.protocol !== "http:" && server.protocol !== "https:") throw new Error("not http(s)")
    } catch {
      throw usageError(`SERVER: "${args.server}" is not an http(s) URL (e.g. http://dstack.example:3000)`)
    }
    const heartbeatSeconds = Number(args.heartbeat)
    if (!Number.isFinite(heartbeatSeconds) || heartbeatSeconds < 1 || heartbeatSeconds > 300) {
      throw usageError(`--heartbeat: "${args.heartbeat}" is not a number of seconds from 1 to 300`)
    }
    const { hostname } = await import("node:os")
    const name = args.name ?? hostname().toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+/, "").slice(0, 63)
    if (!NAME.test(name)) throw usageError(`--name: "${name}" is not a machine name (lowercase letters, digits and '-', up to 63)`)

    const { mkdtempSync, mkdirSync } = await import("node:fs")
    const { tmpdir } = await import("node:os")
    const { join, resolve } = await import("node:path")
    const workDir = resolve(args["work-dir"] ?? mkdtempSync(join(tmpdir(), "dstack-pool-")))
    mkdirSync(workDir, { recursive: true })
    const { Runner } = await import("@dstack-ts/core")
    const { runnerPlugins } = await import("../runnerPlugins.ts")
    const { Agent } = await import("@dstack-ts/backend-pool")
    const resources = await Runner.HostProbe.probeHost(workDir, "nvidia-smi")
    // Served here rather than as `dstack runner` does: this command owns the signals (it leaves
    // the pool first, then closes the runner), and prints its own line, not the runner's.
    const runner = await Runner.serveRunner({ host: "127.0.0.1", port: 0, workDir, plugins: runnerPlugins })
    let joined: Awaited<ReturnType<typeof Agent.stayJoined>>
    const say = (line: string) => console.error(`dstack runner join: ${line}`)
    try {
      joined = await Agent.stayJoined({
        server: server.toString(),
        project,
        token,
        hello: { name, runnerPort: runner.port, heartbeatSeconds, resources },
        onEvent: (event) => {
          if (event._tag === "Lost") say(`lost the connection to ${server.origin}: ${event.message}`)
          else if (event._tag === "Retrying") say(`rejoining in ${(event.delayMs / 1000).toFixed(1)} s (attempt ${event.attempt}${event.error !== undefined ? `; last: ${event.error}` : ""})`)
          else {
            say(event.kept
              ? `rejoined the pool of project ${project} as ${event.machine} after ${(event.downMs / 1000).toFixed(1)} s (attempt ${event.attempts}); the server took this machine back with its jobs`
              : `rejoined the pool of project ${project} as ${event.machine} after ${(event.downMs / 1000).toFixed(1)} s (attempt ${event.attempts}), as a new machine: the server had dropped it`)
          }
        }
      })
    } catch (error) {
      await runner.close()
      throw new CliError(`cannot join the pool of project ${project} at ${server.origin}: ${error instanceof Error ? error.message : String(error)}`)
    }
    console.log(JSON.stringify({ joined: joined.machine, project, runner_port: runner.port, cpus: resources.cpus, memory_mib: resources.memoryMib, gpus: resources.gpus.length }))
    let leaving = false
    const leave = (signal: string) => {
      leaving = true
      joined.leave(`stopped by ${signal}`)
    }
    // `on`, not `once`: Deno's node layer installs signal handlers only through `on`.
    process.on("SIGINT", () => leave("SIGINT"))
    process.on("SIGTERM", () => leave("SIGTERM"))
    const ended = await joined.ended
    await runner.close()
    if (!leaving) throw new CliError(`left the pool: ${ended.message}`)
    console.log(`left the pool of project ${project}`)
    process.exit(0)
  }
})
