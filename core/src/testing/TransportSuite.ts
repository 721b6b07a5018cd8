/**
 * The conformance suite every RunnerTransport runs, against real sockets: fetch carries bodies
 * byte for byte, headers and every status; streamed answers arrive in pieces; an interrupted
 * request is aborted at the runner; unreachable and invalid targets fail with their reasons;
 * forwarded ports carry bytes both ways, many connections at once, and close with their scope.
 */
import { expect, layer } from "@effect/vitest"
import { Effect, Either, Exit, Fiber, type Layer, Scope } from "effect"
import { Buffer } from "node:buffer"
import * as http from "node:http"
import * as net from "node:net"
import * as RunnerTransport from "../ports/RunnerTransport.ts"
import { patternBytes } from "./BlobStoreSuite.ts"

/** Deterministic bytes over a plain ArrayBuffer, so they type as a fetch body. */
const pattern = (size: number, seed: number) => patternBytes(size, seed) as Uint8Array<ArrayBuffer>

/** How a transport's tests give the suite runners to reach. */
export interface TransportFixture {
  /**
   * Starts `server` (a `node:http` or `node:net` server) where the transport expects runners,
   * until the scope closes, and answers the target that reaches it: its `runnerPort` is the
   * port the server listens on, as seen from the instance. The suite forwards to that port
   * too. Default: {@link listenLoopback}.
   */
  readonly listen?: (server: net.Server) => Effect.Effect<RunnerTransport.RunnerTarget, unknown, Scope.Scope>
  /**
   * A target where nothing listens on `runnerPort` (but the host is one the transport
   * serves). Default: {@link unreachableLoopback}.
   */
  readonly unreachable?: Effect.Effect<RunnerTransport.RunnerTarget, unknown, Scope.Scope>
  /**
   * What `forward` can do. `"tunnel"` (default): any local port (0: a free one) to any remote
   * port, through a listener that lives as long as the forward's scope. `"in-place"`: the
   * transport opens nothing and only answers where the remote port is reachable as it is
   * (local port 0 or the remote port itself), refusing any other local port with `Invalid`
   * (`DirectTransport.direct` of @dstack-ts/transport-direct).
   */
  readonly forward?: "tunnel" | "in-place"
  /**
   * Whether a forwarded connection carries the client's half-close to the far side (default
   * true). `false` for a tunnel whose protocol cannot say it (the Kubernetes API's port-forward
   * WebSocket, `v4.channel.k8s.io`), which ends the connection when the client ends its side:
   * the client then reads back all it wrote before it closes, instead of ending its side and
   * reading until the far side ends.
   */
  readonly halfClose?: boolean
}

/** Listens on 127.0.0.1 at a free port until the scope closes: a target for `direct` and `local`. */
export const listenLoopback = (server: net.Server): Effect.Effect<RunnerTransport.RunnerTarget, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<number>((resume) => {
      server.once("error", (error) => resume(Effect.die(error)))
      server.listen({ host: "127.0.0.1", port: 0 }, () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
    }),
    () => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
  ).pipe(Effect.map((port) => ({ hostname: "127.0.0.1", runnerPort: port })))

/** A loopback port that was free a moment ago. */
export const freeLoopbackPort: Effect.Effect<number> = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.once("error", (error) => resume(Effect.die(error)))
  server.listen({ host: "127.0.0.1", port: 0 }, () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** 127.0.0.1 at a port nothing listens on. */
export const unreachableLoopback: Effect.Effect<RunnerTransport.RunnerTarget> = Effect.map(
  freeLoopbackPort,
  (port) => ({ hostname: "127.0.0.1", runnerPort: port })
)

// ---------------------------------------------------------------------------------------------
// Helpers

/** How long a step may take before the suite calls it a hang (a hang detector, not a speed check). */
const HANG_SECONDS = 20
const TEST_TIMEOUT_MS = 60_000

const within = <A, E, R>(what: string, self: Effect.Effect<A, E, R>) =>
  Effect.timeoutFail(self, {
    duration: `${HANG_SECONDS} seconds`,
    onTimeout: () => new Error(`${what}: nothing happened within ${HANG_SECONDS} s, the transport hangs`)
  })

const expectFailure = <A, R>(
  what: string,
  effect: Effect.Effect<A, RunnerTransport.RunnerTransportError, R>,
  reason: RunnerTransport.RunnerTransportErrorReason
) =>
  Effect.map(within(what, Effect.either(effect)), (result) => {
    expect(Either.isLeft(result), `${what}: expected a ${reason} failure, got ${JSON.stringify(Either.getOrUndefined(result))}`)
      .toBe(true)
    const error = (result as Either.Left<RunnerTransport.RunnerTransportError, A>).left
    expect(error._tag, what).toBe("RunnerTransportError")
    expect(error.reason, `${what}: ${error.message}`).toBe(reason)
    expect(error.message ?? "", `${what}: the error says why`).not.toBe("")
    return error
  })

interface Latch {
  readonly promise: Promise<void>
  readonly open: () => void
}
const latch = (): Latch => {
  let open = () => {}
  const promise = new Promise<void>((resolve) => (open = resolve))
  return { promise, open }
}
const awaitLatch = (l: Latch) => Effect.promise(() => l.promise)

/** A scope of its own inside the test's, closed by the test (and at the latest with the test's scope). */
const childScope = Effect.gen(function*() {
  const scope = yield* Scope.make()
  yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
  return scope
})

const bytesOf = (response: Response) => Effect.promise(() => response.arrayBuffer().then((b) => new Uint8Array(b)))
const textOf = (response: Response) => Effect.promise(() => response.text())

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b))

/** Destroys the server's connections when the scope closes, so closing it waits for none. */
const trackConnections = (server: net.Server) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const sockets = new Set<net.Socket>()
      server.on("connection", (socket: net.Socket) => {
        sockets.add(socket)
        socket.on("close", () => sockets.delete(socket))
      })
      return sockets
    }),
    (sockets) => Effect.sync(() => sockets.forEach((s) => s.destroy()))
  )

/** What the stand-in runner saw and the gates a test opens. */
interface StandIn {
  readonly target: RunnerTransport.RunnerTarget
  /** Opened by the test: the second piece of `/stream` is written only then. */
  readonly releaseStream: Latch
  /** Opened when `/hang` was asked, and when its request was closed before an answer. */
  readonly hangSeen: Latch
  readonly hangClosed: Latch
}

/**
 * A stand-in runner over `node:http`:
 * - `/echo` answers the request's body and tells method, URL and the `x-conformance` header;
 * - `/bytes` answers the 256 byte values; `/status/N` answers status N;
 * - `/stream` writes a first piece and the second only once the test releases it;
 * - `/hang` never answers.
 */
const standIn = (listen: NonNullable<TransportFixture["listen"]>) =>
  Effect.gen(function*() {
    const releaseStream = latch()
    const hangSeen = latch()
    const hangClosed = latch()
    const server = http.createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://runner")
      const chunks: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => chunks.push(chunk))
      req.on("end", () => {
        const body = Buffer.concat(chunks)
        if (url.pathname === "/echo") {
          res.writeHead(200, {
            "content-type": "application/octet-stream",
            "x-echo-method": req.method ?? "",
            "x-echo-url": req.url ?? "",
            "x-echo-header": String(req.headers["x-conformance"] ?? ""),
            "x-echo-length": String(body.length)
          })
          res.end(body)
        } else if (url.pathname === "/bytes") {
          res.writeHead(200, { "content-type": "application/octet-stream" })
          res.end(Buffer.from(Array.from({ length: 256 }, (_, i) => i)))
        } else if (url.pathname.startsWith("/status/")) {
          const status = Number(url.pathname.slice("/status/".length))
          res.writeHead(status, { "content-type": "text/plain", "x-status": String(status) })
          res.end(status === 204 || status === 304 ? undefined : `status ${status}`)
        } else if (url.pathname === "/stream") {
          res.writeHead(200, { "content-type": "text/plain" })
          res.write("first piece\n")
          void releaseStream.promise.then(() => res.end("second piece\n"))
        } else if (url.pathname === "/hang") {
          res.on("close", () => hangClosed.open())
          hangSeen.open()
        } else {
          res.writeHead(404, { "content-type": "text/plain" })
          res.end(`no route ${url.pathname}`)
        }
      })
    })
    const target = yield* listen(server)
    yield* trackConnections(server)
    return { target, releaseStream, hangSeen, hangClosed } satisfies StandIn
  })

/** A TCP echo server (half-open: it answers all it read, then ends) started by the fixture. */
const echoServer = (listen: NonNullable<TransportFixture["listen"]>) =>
  Effect.gen(function*() {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on("error", () => socket.destroy())
      socket.pipe(socket)
    })
    const target = yield* listen(server)
    yield* trackConnections(server)
    return target
  })

type SocketError = Error & { readonly code?: string }

const dialHost = (host: string) => host.replace(/^\[(.*)\]$/, "$1")

/**
 * Connects, writes `payload`, half-closes, and answers all that came back before the close.
 * Without `halfClose` it does not end its side: it closes once as many bytes came back as it
 * wrote (or answers what came back when the far side closes first).
 */
const exchangeBytes = (host: string, port: number, payload: Uint8Array, halfClose = true) =>
  Effect.async<Buffer, SocketError>((resume) => {
    const chunks: Array<Buffer> = []
    let done = false
    const finish = (result: Effect.Effect<Buffer, SocketError>) => {
      if (!done) (done = true), resume(result)
    }
    const socket = net.connect({ host: dialHost(host), port, allowHalfOpen: true }, () => (halfClose ? socket.end(payload) : socket.write(payload)))
    let received = 0
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk)
      received += chunk.length
      if (!halfClose && received >= payload.length) {
        finish(Effect.succeed(Buffer.concat(chunks)))
        socket.destroy()
      }
    })
    // Without a half-close of its own, the far side's end is the end of the answer.
    if (!halfClose) socket.on("end", () => finish(Effect.succeed(Buffer.concat(chunks))))
    socket.on("error", (error: SocketError) => finish(Effect.fail(error)))
    socket.on("close", () => finish(Effect.succeed(Buffer.concat(chunks))))
    return Effect.sync(() => socket.destroy())
  })

/** A connection kept open: answers once `probe` came back, and a latch opened when it closes. */
const openConnection = (host: string, port: number, probe: Uint8Array) =>
  Effect.acquireRelease(
    Effect.async<{ readonly socket: net.Socket; readonly closed: Latch }, SocketError>((resume) => {
      const closed = latch()
      const chunks: Array<Buffer> = []
      const socket = net.connect({ host: dialHost(host), port }, () => socket.write(probe))
      socket.on("data", (chunk: Buffer) => {
        chunks.push(chunk)
        if (Buffer.concat(chunks).length >= probe.length) resume(Effect.succeed({ socket, closed }))
      })
      socket.on("error", (error: SocketError) => resume(Effect.fail(error)))
      socket.on("close", () => closed.open())
    }),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )

/** A connection that found nothing: refused, reset, or closed without a byte. */
const expectNothingThere = (what: string, result: Either.Either<Buffer, SocketError>) => {
  if (Either.isLeft(result)) {
    expect(["ECONNREFUSED", "ECONNRESET", "EPIPE"], `${what}: ${result.left.message}`).toContain(result.left.code)
  } else {
    expect(result.right.length, `${what}: no bytes from nowhere`).toBe(0)
  }
}

const expectRefused = (what: string, result: Either.Either<Buffer, SocketError>) => {
  expect(Either.isLeft(result), `${what}: expected the connection to be refused, it was accepted`).toBe(true)
  if (Either.isLeft(result)) expect(result.left.code, `${what}: ${result.left.message}`).toBe("ECONNREFUSED")
}

// ---------------------------------------------------------------------------------------------
// The suite

/**
 * Registers the RunnerTransport conformance tests for one implementation. Each test starts its
 * own stand-in runner (an HTTP server) or TCP echo server through `fixture.listen`.
 *
 * @example
 * testTransport("direct", DirectTransport.layer, { forward: "in-place" })
 * testTransport("local", Layer.succeed(RunnerTransport.RunnerTransport, LocalTransport.transport))
 */
export const testTransport = <E>(
  name: string,
  transportLayer: Layer.Layer<RunnerTransport.RunnerTransport, E>,
  fixture: TransportFixture = {}
): void => {
  const listen = fixture.listen ?? listenLoopback
  const unreachable = fixture.unreachable ?? unreachableLoopback
  const forwardMode = fixture.forward ?? "tunnel"
  const halfClose = fixture.halfClose ?? true
  const exchange = (host: string, port: number, payload: Uint8Array) => exchangeBytes(host, port, payload, halfClose)
  const transport = RunnerTransport.RunnerTransport

  // Live services: real sockets, real time for the hang detectors.
  layer(transportLayer, { timeout: "60 seconds", excludeTestServices: true })(`RunnerTransport conformance: ${name}`, (it) => {
    // -------------------------------------------------------------------------------------------
    // connect and fetch

    it.scoped("connect answers a client whose baseUrl is an http(s) URL and whose fetch reaches the runner's paths", () =>
      Effect.gen(function*() {
        const t = yield* transport
        const runner = yield* standIn(listen)
        const client = yield* t.connect(runner.target)
        expect(["http:", "https:"]).toContain(new URL(client.baseUrl).protocol)
        const response = yield* within("GET /echo", client.fetch("/echo?timestamp=17&name=a%20b"))
        expect(response.status).toBe(200)
        expect(response.headers.get("x-echo-method")).toBe("GET")
        expect(response.headers.get("x-echo-url"), "the path and query arrive as written").toBe("/echo?timestamp=17&name=a%20b")
        expect((yield* bytesOf(response)).length).toBe(0)
        const missing = yield* client.fetch("/no/such/route")
        expect(yield* textOf(missing)).toBe("no route /no/such/route")
      }), TEST_TIMEOUT_MS)

    it.scoped("GET and POST carry bodies byte for byte, binary included, both ways", () =>
      Effect.gen(function*() {
        const t = yield* transport
        const client = yield* t.connect((yield* standIn(listen)).target)
        const all = yield* bytesOf(yield* client.fetch("/bytes"))
        expect(sameBytes(all, Uint8Array.from({ length: 256 }, (_, i) => i)), "GET: the 256 byte values").toBe(true)
        for (const size of [1, 256, 65_537, 1024 * 1024 + 7]) {
          const body = pattern(size, size)
          const response = yield* within(
            `POST of ${size} bytes`,
            client.fetch("/echo", { method: "POST", headers: { "content-type": "application/octet-stream" }, body })
          )
          expect(response.headers.get("x-echo-length"), `the runner got ${size} bytes`).toBe(String(size))
          expect(sameBytes(yield* bytesOf(response), body), `POST of ${size} bytes came back intact`).toBe(true)
        }
        const text = "naïve 日本語 \u0000 and a new\nline"
        const echoed = yield* client.fetch("/echo", { method: "POST", body: text })
        expect(yield* textOf(echoed)).toBe(text)
        const empty = yield* client.fetch("/echo", { method: "POST" })
        expect([empty.headers.get("x-echo-method"), empty.headers.get("x-echo-length")]).toEqual(["POST", "0"])
        expect((yield* bytesOf(empty)).length).toBe(0)
      }), TEST_TIMEOUT_MS)

    it.scoped("request headers reach the runner and response headers come back", () =>
      Effect.gen(function*() {
        const t = yield* transport
        const client = yield* t.connect((yield* standIn(listen)).target)
        const response = yield* client.fetch("/echo", { headers: { "x-conformance": "token abc=1; q" } })
        expect(response.headers.get("x-echo-header")).toBe("token abc=1; q")
        expect(response.headers.get("content-type")).toBe("application/octet-stream")
        yield* bytesOf(response)
      }), TEST_TIMEOUT_MS)

    it.scoped("statuses other than 200 come back as responses, not errors", () =>
      Effect.gen(function*() {
        const t = yield* transport
        const client = yield* t.connect((yield* standIn(listen)).target)
        for (const status of [201, 204, 400, 404, 409, 500, 503]) {
          const response = yield* within(`status ${status}`, client.fetch(`/status/${status}`, { method: "POST", body: "x" }))
          expect(response.status).toBe(status)
          expect(response.headers.get("x-status")).toBe(String(status))
          expect(yield* textOf(response)).toBe(status === 204 ? "" : `status ${status}`)
        }
      }), TEST_TIMEOUT_MS)

    it.scoped("a streamed response arrives in pieces before the runner ends it", () =>
      Effect.gen(function*() {
        const t = yield* transport
        const runner = yield* standIn(listen)
        const client = yield* t.connect(runner.target)
        const response = yield* within(
          "the response head before the runner ends the response (does the transport buffer whole answers?)",
          client.fetch("/stream")
        )
        expect(response.status).toBe(200)
        const reader = response.body!.getReader()
        const decoder = new TextDecoder()
        let text = ""
        // The runner writes its second piece only when the first has been read here.
        while (!text.includes("first piece\n")) {
          const piece = yield* within(
            "the first piece before the runner ends the response (does the transport buffer whole answers?)",
            Effect.promise(() => reader.read())
          )
          expect(piece.done, "the body ended before its first piece").toBe(false)
          text += decoder.decode(piece.value, { stream: true })
        }
        runner.releaseStream.open()
        while (true) {
          const piece = yield* within("the rest of the stream", Effect.promise(() => reader.read()))
          if (piece.done) break
          text += decoder.decode(piece.value, { stream: true })
        }
        expect(text).toBe("first piece\nsecond piece\n")
      }), TEST_TIMEOUT_MS)

    it.scoped("several requests at once through one client each get their own answer", () =>
      Effect.gen(function*() {
        const t = yield* transport
        const client = yield* t.connect((yield* standIn(listen)).target)
        const answers = yield* within(
          "16 requests at once",
          Effect.forEach(
            Array.from({ length: 16 }, (_, i) => i),
            (i) =>
              client.fetch(`/echo?n=${i}`, { method: "POST", body: pattern(1000 * (i + 1), i + 1) }).pipe(
                Effect.flatMap((response) => Effect.map(bytesOf(response), (bytes) => ({ i, url: response.headers.get("x-echo-url"), bytes })))
              ),
            { concurrency: "unbounded" }
          )
        )
        for (const { bytes, i, url } of answers) {
          expect(url).toBe(`/echo?n=${i}`)
          expect(sameBytes(bytes, pattern(1000 * (i + 1), i + 1)), `answer ${i}`).toBe(true)
        }
      }), TEST_TIMEOUT_MS)

    it.scoped("interrupting a request aborts it at the runner, with or without the caller's own signal", () =>
      Effect.gen(function*() {
        const t = yield* transport
        for (const init of [undefined, { signal: new AbortController().signal }]) {
          const what = init === undefined ? "without a signal" : "with the caller's signal"
          const runner = yield* standIn(listen)
          const client = yield* t.connect(runner.target)
          const fiber = yield* Effect.fork(client.fetch("/hang", init))
          yield* within(`${what}: the runner sees the request`, awaitLatch(runner.hangSeen))
          yield* Fiber.interrupt(fiber)
          yield* within(`${what}: the runner sees the interrupted request closed`, awaitLatch(runner.hangClosed))
        }
      }), TEST_TIMEOUT_MS)

    it.scoped("a runner that does not answer is a retryable Transport failure, not a hang", () =>
      Effect.gen(function*() {
        const t = yield* transport
        const target = yield* unreachable
        const error = yield* expectFailure(
          "fetch from a runner that does not listen",
          Effect.flatMap(t.connect(target), (client) => client.fetch("/api/healthcheck")),
          "Transport"
        )
        expect(error.isRetryable).toBe(true)
        expect(RunnerTransport.isRetryable(error)).toBe(true)
      }), TEST_TIMEOUT_MS)

    it.scoped("a target the transport cannot serve is Invalid at connect: no host name, a runner port out of range", () =>
      Effect.gen(function*() {
        const t = yield* transport
        const { target } = yield* standIn(listen)
        const noHost = yield* expectFailure("connect with no host name", t.connect({ ...target, hostname: "" }), "Invalid")
        expect(noHost.isRetryable).toBe(false)
        for (const runnerPort of [0, -1, 65_536, 80.5, Number.NaN]) {
          yield* expectFailure(`connect to runner port ${runnerPort}`, t.connect({ ...target, runnerPort }), "Invalid")
        }
      }), TEST_TIMEOUT_MS)

    it.scoped("after its scope closed, a client's request works (nothing to close) or fails with Transport, never hangs", () =>
      Effect.gen(function*() {
        const t = yield* transport
        const runner = yield* standIn(listen)
        const client = yield* Effect.scoped(t.connect(runner.target))
        const result = yield* within("a request after the client's scope", Effect.either(client.fetch("/bytes")))
        if (Either.isLeft(result)) {
          expect(result.left.reason, result.left.message).toBe("Transport")
        } else {
          expect((yield* bytesOf(result.right)).length).toBe(256)
        }
      }), TEST_TIMEOUT_MS)

    // -------------------------------------------------------------------------------------------
    // forward

    it.scoped(`forwards local port 0: bytes both ways, binary and large, ${halfClose ? "half-close honoured" : "no half-close (the fixture says the tunnel has none)"}, closed with its scope`, () =>
      Effect.gen(function*() {
        const t = yield* transport
        const target = yield* echoServer(listen)
        const remotePort = target.runnerPort
        const scope = yield* childScope
        const forwarded = yield* Scope.extend(t.forward(target, 0, remotePort), scope)
        expect(forwarded.remotePort).toBe(remotePort)
        expect(Number.isInteger(forwarded.localPort) && forwarded.localPort > 0 && forwarded.localPort < 65_536).toBe(true)
        const big = pattern(4 * 1024 * 1024 + 3, 7)
        const back = yield* within("4 MiB through the forward", exchange(forwarded.localHost, forwarded.localPort, big))
        expect(back.length).toBe(big.length)
        expect(sameBytes(back, big), "4 MiB came back intact").toBe(true)
        const all = Uint8Array.from({ length: 256 }, (_, i) => i)
        expect(sameBytes(yield* within("256 byte values", exchange(forwarded.localHost, forwarded.localPort, all)), all)).toBe(true)
        yield* Scope.close(scope, Exit.void)
        // A tunnel's listener is gone with its scope; a port reachable in place is the server's own.
        if (forwarded.localPort !== remotePort) {
          expectRefused(
            "a connection to the forward after its scope",
            yield* within("a connection after the scope", Effect.either(exchange(forwarded.localHost, forwarded.localPort, all)))
          )
        }
      }), TEST_TIMEOUT_MS)

    if (forwardMode === "tunnel") {
      it.scoped("forwards a chosen local port: many connections at once; its scope's end cuts them and refuses new ones", () =>
        Effect.gen(function*() {
          const t = yield* transport
          const target = yield* echoServer(listen)
          const localPort = yield* freeLoopbackPort
          const scope = yield* childScope
          const forwarded = yield* Scope.extend(t.forward(target, localPort, target.runnerPort), scope)
          expect({ localHost: forwarded.localHost, localPort: forwarded.localPort, remotePort: forwarded.remotePort }).toEqual({ localHost: forwarded.localHost, localPort, remotePort: target.runnerPort })
          const payloads = Array.from({ length: 12 }, (_, i) => pattern(i * 50_000 + 1, i + 11))
          const answers = yield* within(
            "12 connections at once",
            Effect.forEach(payloads, (payload) => exchange(forwarded.localHost, localPort, payload), { concurrency: "unbounded" })
          )
          answers.forEach((answer, i) => expect(sameBytes(answer, payloads[i]!), `connection ${i}`).toBe(true))
          const open = yield* within("a connection held open", openConnection(forwarded.localHost, localPort, new Uint8Array([1, 2, 3])))
          yield* Scope.close(scope, Exit.void)
          yield* within("the open connection is cut when the forward's scope closes", awaitLatch(open.closed))
          expectRefused(
            "a connection after the forward's scope",
            yield* within("a connection after the scope", Effect.either(exchange(forwarded.localHost, localPort, new Uint8Array([9]))))
          )
        }), TEST_TIMEOUT_MS)

      it.scoped("a forward's own connections (`connect`, when it has them): bytes both ways with half-close, cut by its scope, refused after", () =>
        Effect.gen(function*() {
          const t = yield* transport
          const target = yield* echoServer(listen)
          const scope = yield* childScope
          const forwarded = yield* Scope.extend(t.forward(target, 0, target.runnerPort), scope)
          const connect = forwarded.connect
          if (connect === undefined) return // the transport has none: callers use the local port
          const exchangeOn = (payload: Uint8Array) =>
            Effect.tryPromise(() => connect()).pipe(
              Effect.flatMap((stream) =>
                Effect.async<Buffer, Error>((resume) => {
                  const chunks: Array<Buffer> = []
                  stream.on("data", (chunk: Buffer) => chunks.push(chunk))
                  stream.on("end", () => resume(Effect.succeed(Buffer.concat(chunks))))
                  stream.on("error", (error: Error) => resume(Effect.fail(error)))
                  stream.end(payload)
                })
              )
            )
          const big = pattern(2 * 1024 * 1024 + 5, 13)
          const back = yield* within("2 MiB through connect", exchangeOn(big))
          expect(sameBytes(back, big), "2 MiB came back intact after the half-close").toBe(true)
          const held = yield* within("a stream held open", Effect.tryPromise(() => connect()))
          const cut = latch()
          held.on("close", () => cut.open())
          held.on("error", () => cut.open())
          held.resume()
          yield* Scope.close(scope, Exit.void)
          yield* within("the open stream is cut when the forward's scope closes", awaitLatch(cut))
          const after = yield* within("connect after the scope", Effect.either(Effect.tryPromise(() => connect())))
          expect(Either.isLeft(after), "connect after the forward's scope must fail").toBe(true)
        }), TEST_TIMEOUT_MS)

      it.scoped("a local port already in use is Invalid, naming the port", () =>
        Effect.gen(function*() {
          const t = yield* transport
          const target = yield* echoServer(listen)
          const busy = yield* listenLoopback(net.createServer())
          const error = yield* expectFailure(
            "forward from a local port in use",
            t.forward(target, busy.runnerPort, target.runnerPort),
            "Invalid"
          )
          expect(error.message).toContain(String(busy.runnerPort))
        }), TEST_TIMEOUT_MS)
    } else {
      it.scoped("forwards in place only: the remote port itself, any other local port Invalid", () =>
        Effect.gen(function*() {
          const t = yield* transport
          const target = yield* echoServer(listen)
          const same = yield* t.forward(target, target.runnerPort, target.runnerPort)
          expect([same.localPort, same.remotePort]).toEqual([target.runnerPort, target.runnerPort])
          const payload = pattern(70_000, 3)
          expect(sameBytes(yield* within("bytes in place", exchange(same.localHost, same.localPort, payload)), payload)).toBe(true)
          const other = yield* freeLoopbackPort
          const error = yield* expectFailure(
            "forward from another local port",
            t.forward(target, other, target.runnerPort),
            "Invalid"
          )
          expect(error.message).toContain(String(other))
        }), TEST_TIMEOUT_MS)
    }

    it.scoped("forwarding to a port nothing listens on opens; its connections are refused or closed without data", () =>
      Effect.gen(function*() {
        const t = yield* transport
        const target = yield* unreachable
        const localPorts = forwardMode === "tunnel" ? [0, yield* freeLoopbackPort] : [0]
        for (const localPort of localPorts) {
          const forwarded = yield* within(`forward from ${localPort}`, t.forward(target, localPort, target.runnerPort))
          expect(forwarded.remotePort).toBe(target.runnerPort)
          // Twice: a failed connection leaves the forward serving.
          for (const attempt of [1, 2]) {
            const what = `connection ${attempt} to the dead port forwarded from ${localPort}`
            expectNothingThere(
              what,
              yield* within(what, Effect.either(exchange(forwarded.localHost, forwarded.localPort, new Uint8Array([1]))))
            )
          }
        }
      }), TEST_TIMEOUT_MS)

    it.scoped("ports out of range and a target with no host name are Invalid", () =>
      Effect.gen(function*() {
        const t = yield* transport
        const target = yield* echoServer(listen)
        const port = target.runnerPort
        yield* expectFailure("forward with no host name", t.forward({ ...target, hostname: "" }, 0, port), "Invalid")
        for (const remotePort of [0, -1, 65_536, 80.5]) {
          yield* expectFailure(`forward to remote port ${remotePort}`, t.forward(target, 0, remotePort), "Invalid")
        }
        for (const localPort of [-1, 65_536, 80.5]) {
          yield* expectFailure(`forward from local port ${localPort}`, t.forward(target, localPort, port), "Invalid")
        }
      }), TEST_TIMEOUT_MS)
  })
}
