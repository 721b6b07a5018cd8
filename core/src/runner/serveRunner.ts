/**
 * Starts the runner agent with its HTTP API on Node.js or Deno, with the executors and repo
 * types of its plugins. The runtime's adapter is chosen here, at the edge, or injected;
 * nothing below this file knows which runtime runs it.
 */
import { Effect, Either } from "effect"
import type { ServeFunction } from "./adapter/types.ts"
import type { RunnerAgentOptions, RunnerAgentService } from "./RunnerAgent.ts"
import { makeUnscoped } from "./RunnerAgent.ts"
import { makeRunnerApp, runnerUpgrade } from "./RunnerApp.ts"
import { runnerContributions } from "./RunnerPlugins.ts"

/** The port upstream's runner listens on. */
export const DEFAULT_RUNNER_PORT = 10999

export interface ServeRunnerOptions extends Partial<RunnerAgentOptions> {
  /** The port to listen on; 0 picks a free one (see `port` of the result). Default 10999. */
  readonly port?: number
  /** The address to listen on. Default 127.0.0.1: the server reaches runners through tunnels. */
  readonly host?: string
  /** The runner's directory (the job's code goes to `<workDir>/repo`). */
  readonly workDir: string
  /**
   * Plugins whose `executors` and `repos` this runner uses (`@dstack-ts/executor-process`,
   * `@dstack-ts/executor-docker`, a repo type's plugin); checked like a server's plugins.
   * Executors and repos given directly are added to theirs.
   */
  readonly plugins?: ReadonlyArray<unknown>
  /** The runtime adapter; default the one of the runtime this runs on. */
  readonly serve?: ServeFunction
  /**
   * Ports of the job published by whoever started the runner, not by its executor: container
   * port → the port of the instance's host it is reached at (a Kubernetes pod's NodePorts).
   * Reported in `job_runtime_data` over the executor's own. The runner program sets it from
   * `DSTACK_RUNNER_PUBLISHED_PORTS` (JSON, `{"8000": 31234}`).
   */
  readonly publishedPorts?: ReadonlyArray<{ readonly containerPort: number; readonly hostPort: number }>
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
 * Starts a runner. Rejects with a PluginError when its plugins are refused.
 *
 * @example
 * const runner = await serveRunner({ port: 0, workDir: "/tmp/runner", plugins: [executorProcess] })
 * console.log(`runner on ${runner.url}`)
 */
export const serveRunner = async (options: ServeRunnerOptions): Promise<RunningRunner> => {
  const read = await Effect.runPromise(Effect.either(runnerContributions(options.plugins ?? [])))
  if (Either.isLeft(read)) throw read.left
  const contributed = read.right
  const { agent, close: closeAgent } = await Effect.runPromise(makeUnscoped({
    ...options,
    executors: { ...contributed.executors, ...options.executors },
    repos: { ...contributed.repos, ...options.repos }
  }))
  const published = options.publishedPorts ?? []
  // A port published outside (a NodePort) is where the server reaches it, whatever the executor did inside.
  const app = makeRunnerApp(published.length === 0 ? agent : {
    ...agent,
    ports: Effect.map(agent.ports, (own) => [...own.filter((p) => !published.some((q) => q.containerPort === p.containerPort)), ...published])
  })
  const serve = options.serve ?? (await runtimeServe())
  const host = options.host ?? "127.0.0.1"
  const server = await serve(app.fetch, { hostname: host, port: options.port ?? DEFAULT_RUNNER_PORT, upgrade: runnerUpgrade(agent) }).catch(async (error) => {
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
