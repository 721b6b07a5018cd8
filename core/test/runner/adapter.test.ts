// The runtime adapter this suite runs on (Node or Deno, as serveRunner picks it) answers a
// request whose handler throws, or whose upgrade handler throws, with a plain failure and goes
// on serving: the failure never escapes as an unhandled rejection of the server's process.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import type { ListeningServer, ServeFunction } from "../../src/runner/adapter/types.ts"

const adapter = async (): Promise<ServeFunction> =>
  "Deno" in globalThis ? (await import("../../src/runner/adapter/deno.ts")).serve : (await import("../../src/runner/adapter/node.ts")).serve

describe("runtime adapter", () => {
  let server: ListeningServer
  let url: string

  beforeAll(async () => {
    const serve = await adapter()
    server = await serve(
      async (request) => {
        const path = new URL(request.url).pathname
        if (path === "/throws") throw new Error("the handler failed")
        if (path === "/rejects") return Promise.reject(new Error("the handler rejected"))
        return new Response("fine")
      },
      {
        hostname: "127.0.0.1",
        port: 0,
        upgrade: async () => {
          throw new Error("the upgrade handler failed")
        }
      }
    )
    url = `http://127.0.0.1:${server.port}`
  })

  afterAll(() => server?.close())

  it("answers 500 to a handler that throws or rejects, and serves the next request", async () => {
    for (const path of ["/throws", "/rejects"]) {
      const response = await fetch(`${url}${path}`)
      expect(response.status).toBe(500)
      await response.body?.cancel()
    }
    const ok = await fetch(`${url}/ok`)
    expect(ok.status).toBe(200)
    expect(await ok.text()).toBe("fine")
  })

  it("refuses a WebSocket whose upgrade handler throws, and serves the next request", async () => {
    const socket = new WebSocket(`ws://127.0.0.1:${server.port}/socket`)
    const outcome = await new Promise<string>((resolve) => {
      socket.on("open", () => resolve("open"))
      socket.on("error", () => resolve("error"))
      socket.on("close", () => resolve("closed"))
    })
    expect(outcome).not.toBe("open")
    const ok = await fetch(`${url}/ok`)
    expect(await ok.text()).toBe("fine")
  })
})
