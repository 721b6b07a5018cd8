// serve(): a server build on a real port of the runtime this runs on (Node or Deno), closed with
// its engine and stores; a taken port or a bad one is a ServeError and the server is closed.
// (SIGTERM handling is exercised by test/e2e/examples.test.ts on examples/custom-server.)
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../src/ports/BlobStore.ts"
import { createServer } from "../../src/server/createServer.ts"
import type { Server } from "../../src/server/createServer.ts"
import { serve, ServeError, type Serving } from "../../src/server/serve.ts"

/** A memory-backed server whose close() is counted. */
const countedServer = async (): Promise<{ server: Server; closes: () => number }> => {
  const server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: "t" })
  let closes = 0
  return {
    server: { ...server, close: () => (closes++, server.close()) },
    closes: () => closes
  }
}

describe("serve", () => {
  let first: Awaited<ReturnType<typeof countedServer>>
  let serving: Serving

  beforeAll(async () => {
    first = await countedServer()
    serving = await serve(first.server, { port: 0, handleSignals: false })
  }, 60_000)

  afterAll(() => serving.close())

  it("answers the API on the port it reports", async () => {
    expect(serving.url).toBe(`http://127.0.0.1:${serving.port}`)
    expect(serving.port).toBeGreaterThan(0)
    const response = await fetch(`${serving.url}/api/server/get_info`, { method: "POST" })
    expect(response.status).toBe(200)
    expect(await response.json()).toHaveProperty("server_version")
  })

  it("names the address when the port is taken, and closes the server it was given", async () => {
    const second = await countedServer()
    const error = await serve(second.server, { port: serving.port, handleSignals: false }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ServeError)
    expect((error as ServeError).code).toBe("EADDRINUSE")
    expect((error as ServeError).message).toBe(`serve: port ${serving.port} on 127.0.0.1 is already in use`)
    expect(second.closes()).toBe(1)
  }, 60_000)

  it("refuses a port that is not one", async () => {
    const third = await countedServer()
    const error = await serve(third.server, { port: 70000, handleSignals: false }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ServeError)
    expect((error as ServeError).message).toBe("serve: port 70000 is not a port number (0–65535)")
    expect(third.closes()).toBe(1)
  }, 60_000)

  it("close() stops listening and closes the server once, however often it is called", async () => {
    const own = await countedServer()
    const running = await serve(own.server, { port: 0, handleSignals: false })
    await Promise.all([running.close(), running.close()])
    await running.close()
    expect(own.closes()).toBe(1)
    await expect(fetch(`${running.url}/api/server/get_info`, { method: "POST" })).rejects.toThrow()
  }, 60_000)
})
