// `dstack server`: starts the dstack server built by @dstack-ts/core's createServer, with the
// embedded state store and file blobs under ~/.dstack/server, and on first start saves the
// admin's `main` project to ~/.dstack/config.yml (as upstream does) so the CLI works at once.
import { defineCommand } from "citty"
import type { AddressInfo } from "node:net"
import { join } from "node:path"
import { CliError, globalArgs, notAvailable, runEffect, usageError } from "../context.ts"
import { print, success } from "../ui.ts"

/** The parts of core the server command uses; looked up at run time (see `coreParts`). */
export interface ServerParts {
  readonly createServer: (options: {
    readonly state: unknown
    readonly blobs: unknown
    readonly adminToken?: string | undefined
  }) => Promise<{
    readonly app: { readonly fetch: (request: Request) => Response | Promise<Response> }
    readonly bootstrap: { readonly adminToken: string | undefined; readonly project: { readonly projectName: string } }
    readonly close: () => Promise<void>
  }>
  readonly stateLayer: (dataDir: string) => unknown
  readonly blobsLayer: (base: string) => unknown
}

export interface StartOptions {
  readonly host: string
  readonly port: number
  /** `~/.dstack/server`: state and blobs live under it. */
  readonly serverDir: string
  readonly adminToken: string | undefined
  /** The client config to save the project to; undefined to leave it alone. */
  readonly configPath: string | undefined
}

export interface RunningServer {
  readonly url: string
  readonly close: () => Promise<void>
}

/** Starts the server and listens; prints the URL and, on first start, the admin token. */
export const startServer = async (parts: ServerParts, options: StartOptions): Promise<RunningServer> => {
  const server = await parts.createServer({
    state: parts.stateLayer(join(options.serverDir, "data")),
    blobs: parts.blobsLayer(join(options.serverDir, "blobs")),
    adminToken: options.adminToken
  })
  const { serve } = await import("@hono/node-server")
  const listener = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: server.app.fetch, hostname: options.host, port: options.port }, () => resolve(s))
    s.once("error", reject)
  }).catch(async (error: unknown) => {
    await server.close()
    if ((error as { code?: string })?.code === "EADDRINUSE") throw new CliError(`Port ${options.port} on ${options.host} is already in use (pass --port)`)
    throw error
  })
  const { port } = listener.address() as AddressInfo
  const url = `http://${options.host.includes(":") ? `[${options.host}]` : options.host}:${port}`
  const token = server.bootstrap.adminToken ?? options.adminToken
  const project = server.bootstrap.project.projectName
  if (server.bootstrap.adminToken) print(`The admin token is ${server.bootstrap.adminToken}`)
  if (token !== undefined && options.configPath !== undefined) {
    const { ClientConfigFile, DstackClient } = await import("@dstack-ts/core")
    const config = (await runEffect(ClientConfigFile.loadConfigFile(options.configPath))) ?? { projects: [] }
    const hasDefault = config.projects.some((p) => p.default === true && p.name !== project)
    await runEffect(ClientConfigFile.saveConfigFile(options.configPath, DstackClient.upsertProject(config, { name: project, url, token }, !hasDefault)))
    print(`The ${project} project is configured in ${options.configPath}`)
  }
  success(`The server is running at ${url}`)
  return {
    url,
    close: async () => {
      await new Promise<void>((resolve) => listener.close(() => resolve()))
      await server.close()
    }
  }
}

/** core's server parts, or undefined while core does not export createServer. */
const coreParts = async (): Promise<ServerParts | undefined> => {
  const core = (await import("@dstack-ts/core")) as unknown as Record<string, any>
  if (typeof core.createServer !== "function") return undefined
  return {
    createServer: core.createServer,
    stateLayer: (dataDir) => core.EmbeddedStateStore.layer({ dataDir }),
    blobsLayer: (base) => core.UnstorageBlobStore.layerFs({ base })
  }
}

export default defineCommand({
  meta: { name: "server", description: "Start the dstack server" },
  args: {
    host: { type: "string", description: "The address to bind", default: "127.0.0.1", valueHint: "host" },
    port: { type: "string", description: "The port to listen on (0: any free port)", default: "3000", valueHint: "port" },
    token: { type: "string", description: "The admin token (default: DSTACK_SERVER_ADMIN_TOKEN, else a random one printed once)", valueHint: "token" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const port = Number(args.port)
    if (!/^\d+$/.test(args.port) || port > 65535) throw usageError(`--port: "${args.port}" is not a port number (0–65535)`)
    const parts = await coreParts()
    // TODO(server): core/src/index.ts does not export createServer yet; this lights up when it does.
    if (parts === undefined) throw notAvailable("`dstack server` (@dstack-ts/core does not export createServer)")
    const { ClientConfigFile } = await import("@dstack-ts/core")
    const configPath = ClientConfigFile.defaultConfigPath()
    const running = await startServer(parts, {
      host: args.host,
      port,
      serverDir: join(configPath, "..", "server"),
      adminToken: args.token ?? (process.env.DSTACK_SERVER_ADMIN_TOKEN || undefined),
      configPath
    })
    await new Promise<void>((resolve) => {
      process.once("SIGINT", resolve)
      process.once("SIGTERM", resolve)
    })
    await running.close()
  }
})
