// A custom dstack-ts server build: its own choice of plugins and storage, served on Node
// (through @hono/node-server) or on Deno (Deno.serve). Run: npx tsx examples/custom-server/server.ts
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { createServer, EmbeddedStateStore, UnstorageBlobStore } from "@dstack-ts/core"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import handlerDataframe from "@dstack-ts/handler-dataframe"

type Serve = (fetch: (req: Request) => Response | Promise<Response>, port: number) => Promise<{ port: number; close: () => Promise<void> }>

/** Serving on Node: @hono/node-server. */
const serveNode: Serve = async (fetch, port) => {
  const { serve } = await import("@hono/node-server")
  return new Promise((resolve) => {
    const server = serve({ fetch, hostname: "127.0.0.1", port }, (info) =>
      resolve({ port: info.port, close: () => new Promise((done) => server.close(() => done())) }))
  })
}

/** Serving on Deno: Deno.serve (typed here so that this file also compiles without Deno's types). */
interface DenoServe {
  serve(options: { hostname: string; port: number; onListen: (addr: { port: number }) => void }, handler: (req: Request) => Response | Promise<Response>): { shutdown(): Promise<void> }
  addSignalListener(signal: "SIGINT" | "SIGTERM", handler: () => void): void
}
const Deno = () => (globalThis as unknown as { Deno: DenoServe }).Deno
const serveDeno: Serve = (fetch, port) =>
  new Promise((resolve) => {
    const server = Deno().serve(
      { hostname: "127.0.0.1", port, onListen: (addr) => resolve({ port: addr.port, close: () => server.shutdown() }) },
      fetch
    )
  })

// Where state and blobs live: DSTACK_SERVER_DIR, else a fresh temporary directory.
const dir = process.env.DSTACK_SERVER_DIR || mkdtempSync(join(tmpdir(), "dstack-custom-server-"))

const server = await createServer({
  state: EmbeddedStateStore.layer({ dataDir: join(dir, "data") }),
  blobs: UnstorageBlobStore.layerFs({ base: join(dir, "blobs") }),
  adminToken: process.env.DSTACK_SERVER_ADMIN_TOKEN || undefined,
  plugins: [backendLocal, transportLocal, handlerDataframe],
  compute: { defaultBackends: [{ type: "local" }] },
  // The runner build the local backend starts: the CLI's default one (process and docker executors).
  runner: { entry: fileURLToPath(import.meta.resolve("@dstack-ts/cli/runner")) }
})

// The one runtime choice, made here: how to serve, and how to hear SIGINT/SIGTERM.
const onDeno = "Deno" in globalThis
const serve = onDeno ? serveDeno : serveNode
const onSignal = (signal: "SIGINT" | "SIGTERM", f: () => void) => onDeno ? Deno().addSignalListener(signal, f) : process.once(signal, f)
const listening = await serve(server.app.fetch, Number(process.env.DSTACK_SERVER_PORT ?? 3000))
console.log(`dstack-ts server on http://127.0.0.1:${listening.port} (data in ${dir})`)
// Printed once, on the first start over an empty state store.
if (server.bootstrap.adminToken) console.log(`admin token: ${server.bootstrap.adminToken}`)

const stop = async () => {
  await listening.close()
  await server.close()
  process.exit(0)
}
onSignal("SIGINT", stop)
onSignal("SIGTERM", stop)
