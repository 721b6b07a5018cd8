// The direct transport against a real HTTP server on loopback, and the plugin's options.
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import plugin, { DirectTransport } from "../src/index.ts"

let server: Server
let port = 0
beforeAll(async () => {
  server = createServer((req, res) => {
    res.setHeader("content-type", "application/json")
    res.end(JSON.stringify({ service: "dstack-runner", path: req.url }))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  port = (server.address() as AddressInfo).port
})
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))

describe("DirectTransport.direct", () => {
  it.scoped("connects to the runner and fetches through the client", () =>
    Effect.gen(function*() {
      const client = yield* DirectTransport.direct.connect({ hostname: "127.0.0.1", runnerPort: port })
      expect(client.baseUrl).toBe(`http://127.0.0.1:${port}`)
      const response = yield* client.fetch("/api/healthcheck")
      expect(yield* Effect.promise(() => response.json())).toEqual({ service: "dstack-runner", path: "/api/healthcheck" })
    }))

  it.scoped("a runner that is not listening is a retryable Transport error naming the address", () =>
    Effect.gen(function*() {
      const closed = createServer()
      yield* Effect.promise(() => new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve)))
      const deadPort = (closed.address() as AddressInfo).port
      yield* Effect.promise(() => new Promise<void>((resolve) => closed.close(() => resolve())))
      const client = yield* DirectTransport.direct.connect({ hostname: "127.0.0.1", runnerPort: deadPort })
      const error = yield* Effect.flip(client.fetch("/api/healthcheck"))
      expect([error.reason, error.isRetryable]).toEqual(["Transport", true])
      expect(error.message).toContain(`cannot reach the runner at http://127.0.0.1:${deadPort}`)
    }))

  it.scoped("forwards in place only: local port 0 to any host, a given local port only to a loopback target's same port", () =>
    Effect.gen(function*() {
      const target = { hostname: "127.0.0.1", runnerPort: port }
      expect(yield* DirectTransport.direct.forward(target, 0, 8000)).toEqual({ localHost: "127.0.0.1", localPort: 8000, remotePort: 8000 })
      const error = yield* Effect.flip(DirectTransport.direct.forward(target, 9000, 8000))
      expect(error.reason).toBe("Invalid")
      expect(error.message).toContain("use a tunnelling transport (ssh)")
      expect(yield* DirectTransport.direct.forward({ hostname: "10.0.0.5", runnerPort: 10999 }, 0, 31234)).toEqual({ localHost: "10.0.0.5", localPort: 31234, remotePort: 31234 })
      const remote = yield* Effect.flip(DirectTransport.direct.forward({ hostname: "10.0.0.5", runnerPort: 10999 }, 8000, 8000))
      expect(remote.message).toContain("cannot forward local port 8000 to 10.0.0.5:8000")
      const noHost = yield* Effect.flip(DirectTransport.direct.connect({ hostname: "", runnerPort: 1 }))
      expect(noHost.message).toBe("the instance has no host name yet")
    }))
})

describe("the transport-direct plugin", () => {
  it.effect("makes the transport from no options and refuses any option", () =>
    Effect.gen(function*() {
      const make = plugin.transports!.direct
      expect((yield* Effect.scoped(make({}))).name).toBe("direct")
      expect((yield* Effect.scoped(make(undefined))).name).toBe("direct")
      const error = yield* Effect.flip(Effect.scoped(make({ port: 22 })))
      expect(error.reason).toBe("Invalid")
      expect(error.message).toContain("takes no options")
    }))
})
