// A custom dstack-ts server build: its own plugins and storage, served by core's serve() on Node
// or Deno. Run: npx tsx examples/custom-server/server.ts (or: deno run -A examples/custom-server/server.ts)
import { join } from "node:path"
import { createServer, EmbeddedStateStore, serve, UnstorageBlobStore } from "@dstack-ts/core"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import handlerDataframe from "@dstack-ts/handler-dataframe"

const dir = process.env.DSTACK_SERVER_DIR || ".dstack-ts/custom-server" // state and blobs
const server = await createServer({
  state: EmbeddedStateStore.layer({ dataDir: join(dir, "data") }),
  blobs: UnstorageBlobStore.layerFs({ base: join(dir, "blobs") }),
  adminToken: process.env.DSTACK_SERVER_ADMIN_TOKEN || undefined,
  plugins: [backendLocal, transportLocal, handlerDataframe],
  compute: { defaultBackends: [{ type: "local" }] }
})
const { url } = await serve(server, { port: Number(process.env.DSTACK_SERVER_PORT ?? 3000) }) // SIGINT/SIGTERM close it
console.log(`dstack-ts server on ${url} (data in ${dir})`)
if (server.bootstrap.adminToken) console.log(`admin token: ${server.bootstrap.adminToken}`) // first start only
