// The local transport against real sockets: a real runner answers through it, non-loopback
// hosts are refused, and a forward between two different local ports really carries bytes.
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Runner } from "@dstack-ts/core"
import { Effect, Either } from "effect"
import plugin, { LocalTransport } from "../src/index.ts"

const { transport } = LocalTransport

/** A real runner agent listening on a free loopback port for the test's scope. */
const runner = Effect.acquireRelease(
  Effect.promise(() =>
    Runner.serveRunner({ port: 0, host: "127.0.0.1", workDir: fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-transport-")) })
  ),
  (r) => Effect.promise(() => r.close())
)

/** A TCP echo server on a free loopback port for the test's scope. */
const echoServer = Effect.acquireRelease(
  Effect.async<net.Server>((resume) => {
    const server = net.createServer((socket) => socket.pipe(socket))
    server.listen({ host: "127.0.0.1", port: 0 }, () => resume(Effect.succeed(server)))
  }),
  (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
)

const portOf = (server: net.Server) => (server.address() as net.AddressInfo).port

/** A port that was free a moment ago. */
const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen({ host: "127.0.0.1", port: 0 }, () => {
    const port = portOf(server)
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** Connects to 127.0.0.1:port, sends `payload`, half-closes, and answers everything read back. */
const roundTrip = (port: number, payload: Buffer) =>
  Effect.async<Buffer, Error>((resume) => {
    const chunks: Array<Buffer> = []
    const socket = net.connect({ host: "127.0.0.1", port }, () => socket.end(payload))
    socket.on("data", (chunk: Buffer) => chunks.push(chunk))
    socket.on("error", (error) => resume(Effect.fail(error)))
    socket.on("close", () => resume(Effect.succeed(Buffer.concat(chunks))))
  })

describe("connect", () => {
  it.live("reaches a real runner over loopback", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const r = yield* runner
        const client = yield* transport.connect({ hostname: "127.0.0.1", runnerPort: r.port })
        expect(client.baseUrl).toBe(`http://127.0.0.1:${r.port}`)
        const response = yield* client.fetch("/api/healthcheck")
        const health = yield* Effect.promise(() => response.json() as Promise<{ service: string }>)
        expect(health.service).toBe("dstack-ts-runner")
        // `localhost` is this machine too.
        const viaName = yield* transport.connect({ hostname: "localhost", runnerPort: r.port })
        expect((yield* viaName.fetch("/api/healthcheck")).status).toBe(200)
      })
    ))

  it.live("refuses a host that is not this machine, naming it", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const error = yield* Effect.flip(transport.connect({ hostname: "10.1.2.3", runnerPort: 10999 }))
        expect(error.reason).toBe("Invalid")
        expect(error.message).toContain("10.1.2.3")
        const empty = yield* Effect.flip(transport.connect({ hostname: "", runnerPort: 10999 }))
        expect(empty.message).toContain("no host name yet")
        const badPort = yield* Effect.flip(transport.connect({ hostname: "127.0.0.1", runnerPort: 70000 }))
        expect(badPort.reason).toBe("Invalid")
      })
    ))

  it.live("a runner that does not listen is a retryable Transport error", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const port = yield* freePort
        const client = yield* transport.connect({ hostname: "127.0.0.1", runnerPort: port })
        const error = yield* Effect.flip(client.fetch("/api/healthcheck"))
        expect(error.reason).toBe("Transport")
        expect(error.isRetryable).toBe(true)
        expect(error.message).toContain(`127.0.0.1:${port}`)
      })
    ))
})

describe("forward", () => {
  it.live("local port 0 or the same port: the job's port is already reachable, nothing is opened", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const server = yield* echoServer
        const port = portOf(server)
        const target = { hostname: "127.0.0.1", runnerPort: 1 }
        expect(yield* transport.forward(target, 0, port)).toEqual({ localHost: "127.0.0.1", localPort: port, remotePort: port })
        expect(yield* transport.forward(target, port, port)).toEqual({ localHost: "127.0.0.1", localPort: port, remotePort: port })
        expect((yield* roundTrip(port, Buffer.from("direct"))).toString()).toBe("direct")
      })
    ))

  it.live("another local port: a real TCP forward carries bytes both ways and closes with its scope", () =>
    Effect.gen(function*() {
      const localPort = yield* freePort
      yield* Effect.scoped(
        Effect.gen(function*() {
          const server = yield* echoServer
          const forwarded = yield* transport.forward({ hostname: "127.0.0.1", runnerPort: 1 }, localPort, portOf(server))
          expect(forwarded).toEqual({ localHost: "127.0.0.1", localPort, remotePort: portOf(server) })
          expect((yield* roundTrip(localPort, Buffer.from("hello through the forward"))).toString()).toBe(
            "hello through the forward"
          )
          // Several connections at once, with a payload bigger than any socket buffer.
          const big = Buffer.alloc(4 * 1024 * 1024)
          for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff
          const answers = yield* Effect.all([roundTrip(localPort, big), roundTrip(localPort, Buffer.from("small"))], {
            concurrency: 2
          })
          expect(answers[0].equals(big)).toBe(true)
          expect(answers[1].toString()).toBe("small")
        })
      )
      const after = yield* Effect.either(roundTrip(localPort, Buffer.from("x")))
      expect(Either.isLeft(after) && (after.left as { code?: string }).code).toBe("ECONNREFUSED")
    }))

  it.live("a target that does not listen: the connection is closed, the forward keeps serving", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const dead = yield* freePort
        const forwarded = yield* transport.forward({ hostname: "127.0.0.1", runnerPort: 1 }, yield* freePort, dead)
        const answer = yield* Effect.either(roundTrip(forwarded.localPort, Buffer.from("anyone?")))
        // Closed (or reset) without an answer.
        if (Either.isRight(answer)) expect(answer.right.length).toBe(0)
        const server = yield* echoServer
        const second = yield* transport.forward({ hostname: "127.0.0.1", runnerPort: 1 }, yield* freePort, portOf(server))
        expect((yield* roundTrip(second.localPort, Buffer.from("ok"))).toString()).toBe("ok")
      })
    ))

  it.live("a local port in use, or a host that is not this machine, is refused", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const busy = yield* echoServer
        const other = yield* echoServer
        const inUse = yield* Effect.flip(transport.forward({ hostname: "127.0.0.1", runnerPort: 1 }, portOf(busy), portOf(other)))
        expect(inUse.reason).toBe("Invalid")
        expect(inUse.message).toContain(`127.0.0.1:${portOf(busy)}`)
        expect(inUse.message).toContain("already in use")
        const remote = yield* Effect.flip(transport.forward({ hostname: "gpu-box.example.com", runnerPort: 1 }, 0, 8080))
        expect(remote.reason).toBe("Invalid")
        expect(remote.message).toContain("gpu-box.example.com")
      })
    ))
})

describe("plugin", () => {
  it.scoped("contributes the transport local; its factory refuses unknown options", () =>
    Effect.gen(function*() {
      expect(plugin.name).toBe("@dstack-ts/transport-local")
      const factory = plugin.transports!.local
      expect((yield* factory({})).name).toBe("local")
      const error = yield* Effect.flip(factory({ tunnel: true }))
      expect(error.reason).toBe("Invalid")
      expect(error.message).toContain("tunnel")
    }))
})
