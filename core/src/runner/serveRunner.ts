/**
 * Starts the runner agent with its HTTP API on Node.js or Deno. The runtime's adapter is
 * chosen here, at the edge, or injected; nothing below this file knows which runtime runs it.
 */
import { Effect } from "effect"
import type { ServeFunction } from "./adapter/types.ts"
import type { RunnerAgentOptions, RunnerAgentService } from "./RunnerAgent.ts"
import { makeUnscoped } from "./RunnerAgent.ts"
import { makeRunnerApp } from "./RunnerApp.ts"

/** The port upstream's runner listens on. */
export const DEFAULT_RUNNER_PORT = 10999

export interface ServeRunnerOptions extends Partial<RunnerAgentOptions> {
  /** The port to listen on; 0 picks a free one (see `port` of the result). Default 10999. */
  readonly port?: number
  /** The address to listen on. Default 127.0.0.1: the server reaches runners through tunnels. */
  readonly host?: string
  /** The runner's directory (the job's code goes to `<workDir>/repo`). */
  readonly workDir: string
  /** The runtime adapter; default the one of the runtime this runs on. */
  readonly serve?: ServeFunction
}

export interface RunningRunner {
  readonly host: string
  /** The port actually bound. */
  readonly port: number
  /** `http://host:port`, for a client on the same host. */
  readonly url: string
  readonly agent: RunnerAgentService
  /** Stops the HTTP server and aborts a job that still runs. */
  readonly close: () => Promise<void>
}

const runtimeServe = async (): Promise<ServeFunction> =>
  "Deno" in globalThis ? (await import("./adapter/deno.ts")).serve : (await import("./adapter/node.ts")).serve

/**
 * Starts a runner.
 *
 * @example
 * const runner = await serveRunner({ port: 0, workDir: "/tmp/runner" })
 * console.log(`runner on ${runner.url}`)
 */
export const serveRunner = async (options: ServeRunnerOptions): Promise<RunningRunner> => {
  const { agent, close: closeAgent } = await Effect.runPromise(makeUnscoped(options))
  const app = makeRunnerApp(agent)
  const serve = options.serve ?? (await runtimeServe())
  const host = options.host ?? "127.0.0.1"
  const server = await serve(app.fetch, { hostname: host, port: options.port ?? DEFAULT_RUNNER_PORT }).catch(async (error) => {
    await Effect.runPromise(closeAgent)
    throw error
  })
  const urlHost = host.includes(":") ? `[${host}]` : host
  return {
    host,
    port: server.port,
    url: `http://${urlHost}:${server.port}`,
    agent,
    close: async () => {
      await server.close()
      await Effect.runPromise(closeAgent)
    }
  }
}
