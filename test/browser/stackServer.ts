// A real dstack-ts server on a real port for the stacks tests (end to end and browser): the
// embedded state store in memory, blobs on disk under a temp dir, the three handler plugins.
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { serve } from "@hono/node-server"
import type { AddressInfo } from "node:net"
import dataframe from "@dstack-ts/handler-dataframe"
import plot from "@dstack-ts/handler-plot"
import model from "@dstack-ts/handler-model"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { UnstorageBlobStore } from "@dstack-ts/blob-unstorage"

const { layerFs } = UnstorageBlobStore
import { createServer, type Server } from "../../core/src/server/createServer.ts"

export const ADMIN_TOKEN = "stacks-admin-token"

export interface StackServer {
  readonly server: Server
  readonly url: string
  readonly blobDir: string
  /** Creates a user and answers their token. */
  readonly createUser: (username: string) => Promise<string>
  readonly close: () => Promise<void>
}

export const startStackServer = async (): Promise<StackServer> => {
  const blobDir = await mkdtemp(join(tmpdir(), "dstack-stacks-"))
  const server = await createServer({
    state: EmbeddedStateStore.layerMemory(),
    blobs: layerFs({ base: blobDir }),
    adminToken: ADMIN_TOKEN,
    plugins: [dataframe, plot, model],
    engine: { resyncMs: 60_000 }
  })
  const http = serve({ fetch: server.app.fetch, port: 0, hostname: "127.0.0.1" })
  await new Promise<void>((resolve) => http.once("listening", () => resolve()))
  const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`
  const createUser = async (username: string) => {
    const res = await fetch(`${url}/api/users/create`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ username, global_role: "user" })
    })
    if (!res.ok) throw new Error(`create user ${username}: ${res.status} ${await res.text()}`)
    return ((await res.json()) as { creds: { token: string } }).creds.token
  }
  return {
    server,
    url,
    blobDir,
    createUser,
    close: async () => {
      // Idle keep-alive connections of the test's clients would hold close() open (on Deno
      // until the hook timed out): they are dropped with the server.
      const closed = new Promise<void>((resolve) => http.close(() => resolve()))
      ;(http as { closeAllConnections?: () => void }).closeAllConnections?.()
      await closed
      await server.close()
      await rm(blobDir, { recursive: true, force: true })
    }
  }
}
