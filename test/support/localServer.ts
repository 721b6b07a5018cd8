// A dstack-ts server inside the test's own process, on a free loopback port: state and blobs
// in memory, the local backend and transport, the default runner build (cli/src/runner.ts).
// What the services, SDK and proxy suites start; each names only what it changes.
import * as path from "node:path"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server, type ServerOptions } from "../../core/src/server/createServer.ts"
import { serve, type Serving } from "../../core/src/server/serve.ts"
import { httpCall } from "./api.ts"

export interface LocalServerOptions {
  /** The admin token; `call` sends it. */
  readonly token: string
  /** The local backend's `max_instances` (unset: the backend's default). */
  readonly maxInstances?: number
  /** The local backend's `work_dir` (unset: the backend's default). */
  readonly workDir?: string
  /** Anything else of the server build, over the defaults above (`services`, `sshProxy`, …). */
  readonly server?: Partial<ServerOptions>
}

export interface LocalServer {
  readonly server: Server
  readonly serving: Serving
  /** POSTs JSON to the API with the admin token. */
  readonly call: ReturnType<typeof httpCall>
}

export const startLocalServer = async (options: LocalServerOptions): Promise<LocalServer> => {
  const config = {
    ...(options.maxInstances === undefined ? {} : { max_instances: options.maxInstances }),
    ...(options.workDir === undefined ? {} : { work_dir: options.workDir })
  }
  const server = await createServer({
    state: EmbeddedStateStore.layerMemory(),
    blobs: blobsMemory,
    adminToken: options.token,
    plugins: [backendLocal, transportLocal],
    compute: { defaultBackends: [{ type: "local", ...(Object.keys(config).length > 0 ? { config } : {}) }] },
    runner: { entry: path.resolve("cli/src/runner.ts") },
    ...options.server
  })
  const serving = await serve(server, { port: 0, handleSignals: false })
  return { server, serving, call: httpCall(serving.url, options.token) }
}
