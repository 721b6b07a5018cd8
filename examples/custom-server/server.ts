// A custom server build, served on Node or Deno: npx tsx (or deno run -A) examples/custom-server/server.ts
import { join } from "node:path"
import { createServer, serve } from "@dstack-ts/core"
import stateEmbedded from "@dstack-ts/state-embedded"
import blobUnstorage from "@dstack-ts/blob-unstorage"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import handlerDataframe from "@dstack-ts/handler-dataframe"
const dir = process.env.DSTACK_SERVER_DIR || ".dstack-ts/custom-server" // state and blobs
const server = await createServer({
  plugins: [stateEmbedded, blobUnstorage, backendLocal, transportLocal, handlerDataframe],
  state: { driver: "embedded", options: { data_dir: join(dir, "data") } },
  blobs: { driver: "fs", options: { base: join(dir, "blobs") } },
  adminToken: process.env.DSTACK_SERVER_ADMIN_TOKEN || undefined,
  compute: { defaultBackends: [{ type: "local" }] },
  runner: { entry: import.meta.resolve("@dstack-ts/cli/runner") } // the runner build its instances start
})
const { url } = await serve(server, { port: Number(process.env.DSTACK_SERVER_PORT ?? 3000) }) // SIGINT/SIGTERM close it
console.log(`dstack-ts server on ${url} (data in ${dir})`, server.bootstrap.adminToken ? `admin token: ${server.bootstrap.adminToken}` : "")
