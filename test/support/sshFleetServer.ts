// The server the SSH-fleet suites run against: state and blobs in memory, the ssh backend and
// transport, runners bundled from this checkout's source, and an engine that resyncs every 2 s
// (the suites' hosts come and go faster than the default). Options add to or replace these.
import { fileURLToPath } from "node:url"
import backendSsh from "@dstack-ts/backend-ssh"
import transportSsh from "@dstack-ts/transport-ssh"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server, type ServerOptions } from "../../core/src/server/createServer.ts"

/** The runner program as the server bundles it: `dstack runner` from the source tree. */
export const RUNNER_ENTRY = fileURLToPath(new URL("../../cli/src/runner.ts", import.meta.url))

export const sshFleetServer = (adminToken: string, options: Partial<ServerOptions> = {}): Promise<Server> =>
  createServer({
    state: EmbeddedStateStore.layerMemory(),
    blobs: blobsMemory,
    adminToken,
    plugins: [backendSsh, transportSsh],
    runner: { entry: RUNNER_ENTRY },
    ...options,
    engine: { resyncMs: 2_000, ...options.engine }
  })

/** A run's answer of `runs/get` has ended. */
export const finished = (run: any): boolean => ["done", "failed", "terminated"].includes(run.status)
