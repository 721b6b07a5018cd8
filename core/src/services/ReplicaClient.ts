/**
 * The proxy's HTTP client to replicas: node:http over a keep-alive agent, so that requests to a
 * replica reuse its connections instead of paying fetch's per-request machinery. A request body
 * is a web stream or a Node stream (the caller's own request on Node), written to the replica
 * with backpressure as it arrives; the answer comes back as a web `Response` whose body streams
 * — except a small answer of known length, read whole first so the server writes it in one go.
 */
import * as http from "node:http"
import * as net from "node:net"
import type { Duplex, Readable } from "node:stream"

/** An answer of a known length up to this is read whole before it is passed on. */
const SMALL_ANSWER_BYTES = 64 * 1024
/**
 * An idle connection is closed after this unless the replica announces a shorter keep-alive
 * (Node's agent then closes it a second before). Under the 5 s many servers keep idle
 * connections, so that a request is rarely sent into a connection the replica is closing.
 */
const IDLE_SOCKET_MS = 4_000

/**
 * The kept-alive connections to replicas of one server: each server has its own (made with its
 * service registry and destroyed when the server closes), so that servers in one process neither
 * share sockets nor keep each other's open.
 */
export const makeReplicaAgent = (): http.Agent => new http.Agent({ keepAlive: true, timeout: IDLE_SOCKET_MS, scheduling: "lifo" })

/** A request body: a web stream (Deno, the model router) or the caller's Node request. */
export type BodySource = ReadableStream<Uint8Array> | Readable

/** A body written to one replica request at a time; `started` once any of it was taken. */
export class OutgoingBody {
  started = false
  private reader: ReadableStreamDefaultReader<Uint8Array> | undefined
  constructor(private readonly source: BodySource) {}

  /** Writes the rest of the body into `req` and ends it; rejects when the source fails. */
  async writeTo(req: http.ClientRequest): Promise<void> {
    const source = this.source
    if (source instanceof ReadableStream) {
      this.reader ??= source.getReader()
      for (;;) {
        const { done, value } = await this.reader.read()
        this.started = true
        if (done) break
        if (!req.write(value)) await new Promise<void>((resolve) => {
          const go = () => {
            req.off("drain", go)
            req.off("close", go)
            resolve()
          }
          req.on("drain", go)
          req.on("close", go)
        })
        if (req.destroyed) return
      }
      req.end()
      return
    }
    this.started = true
    await new Promise<void>((resolve, reject) => {
      source.once("error", reject)
      source.once("end", resolve)
      source.pipe(req)
    })
  }

  /** The body will not be sent (the request was refused or failed). */
  cancel(reason: unknown): void {
    const source = this.source
    if (source instanceof ReadableStream) void (this.reader ?? source).cancel(reason).catch(() => undefined)
    else source.resume()
  }
}

/** A replica's answer: its status, headers and body, before the body is read. */
export interface ReplicaAnswer {
  readonly status: number
  readonly statusText: string
  /** Header name/value pairs as received (repeated names repeated). */
  readonly rawHeaders: ReadonlyArray<string>
  readonly message: http.IncomingMessage
}

/** An error reaching the replica: `sent` tells whether any of the body had gone out. */
export class ReplicaRequestError extends Error {
  constructor(override readonly cause: Error, readonly sent: boolean, readonly reusedSocket: boolean) {
    super(cause.message)
  }
}

/** Sends a request to `host:port` and resolves with the answer's head (the body still to read). */
export const sendToReplica = (
  agent: http.Agent,
  target: { readonly host: string; readonly port: number },
  method: string,
  path: string,
  headers: http.OutgoingHttpHeaders,
  body: OutgoingBody | null
): Promise<ReplicaAnswer> =>
  new Promise<ReplicaAnswer>((resolve, reject) => {
    const req = http.request({ agent, host: target.host, port: target.port, method, path, headers, setHost: false })
    let settled = false
    req.once("response", (message) => {
      settled = true
      resolve({ status: message.statusCode ?? 502, statusText: message.statusMessage ?? "", rawHeaders: message.rawHeaders, message })
    })
    req.once("error", (error) => {
      if (settled) return
      settled = true
      reject(new ReplicaRequestError(error, body?.started ?? false, req.reusedSocket))
    })
    if (body === null) req.end()
    else {
      // The body goes out once the connection is up: a replica that refuses the connection has
      // taken none of it, and the request may go to another.
      req.once("socket", (socket) => {
        const write = () =>
          body.writeTo(req).catch((error: unknown) => {
            // The caller's body failed (they went away): the replica's request goes too.
            req.destroy(error instanceof Error ? error : new Error(String(error)))
          })
        if (socket.connecting) socket.once("connect", write)
        else write()
      })
    }
  })

/**
 * The answer's body as a web stream, read as the caller reads it; `end(broken)` is called once
 * when it ends (`broken`: the replica broke it off) or the caller cancels it.
 */
export const answerBody = (message: http.IncomingMessage, end: (broken: boolean) => void): ReadableStream<Uint8Array> => {
  let finished = false
  const finish = (broken: boolean) => {
    if (finished) return
    finished = true
    end(broken)
  }
  return new ReadableStream<Uint8Array>({
    start: (controller) => {
      message.on("data", (chunk: Buffer) => {
        if (finished) return
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength))
        if ((controller.desiredSize ?? 1) <= 0) message.pause()
      })
      message.once("end", () => {
        if (finished) return
        finish(false)
        controller.close()
      })
      message.once("error", (error) => {
        if (finished) return
        finish(true)
        controller.error(error)
      })
      message.once("close", () => {
        // Closed before its end: the replica broke the answer off.
        if (!message.complete && !finished) {
          finish(true)
          controller.error(new Error("the replica closed the connection before the answer ended"))
        }
      })
    },
    pull: () => {
      message.resume()
    },
    cancel: () => {
      finish(false)
      message.destroy()
    }
  }, { highWaterMark: 1 })
}

/**
 * Reads a small answer of known length whole (resolves undefined when the answer is not one):
 * rejects when the replica breaks it off.
 */
export const readSmallAnswer = (message: http.IncomingMessage): Promise<Uint8Array> | undefined => {
  const length = Number(message.headers["content-length"] ?? NaN)
  if (!(length >= 0 && length <= SMALL_ANSWER_BYTES)) return undefined
  return new Promise<Uint8Array>((resolve, reject) => {
    const chunks: Array<Buffer> = []
    message.on("data", (chunk: Buffer) => chunks.push(chunk))
    message.once("end", () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)))
    message.once("error", reject)
    message.once("close", () => {
      if (!message.complete) reject(new Error("the replica closed the connection before the answer ended"))
    })
  })
}

/** Where a replica's app is reached, as far as the checks of whether it listens need. */
export interface AppAddress {
  readonly host: string
  readonly port: number
  /** A connection to the app without the forward's local listener (`ForwardedPort.connect`). */
  readonly connect?: () => Promise<Duplex>
  /** A relay before the app accepts a connection whether or not the app listens (see `appAnswers`). */
  readonly relayed: boolean
}

/** How long a check of whether an app listens waits for its connection or its answer. */
const CHECK_MS = 2_000

/**
 * Whether a replica's app listens now: it accepts a connection, or, behind a relay that accepts
 * for it, answers an HTTP request.
 */
export const appListens = (address: AppAddress): Promise<boolean> => (address.relayed ? appAnswers(address) : appAccepts(address))

/** Opens a connection to the app: its own channel where the forward has one, else a TCP connection to the address. */
const open = (address: AppAddress): Promise<Duplex> =>
  address.connect !== undefined
    ? address.connect()
    : new Promise((resolve, reject) => {
      const socket = net.connect({ host: address.host, port: address.port })
      socket.once("connect", () => {
        socket.off("error", reject)
        resolve(socket)
      })
      socket.once("error", reject)
    })

/**
 * Runs `check` on a connection to the app, within 2 s (false after that); the connection is
 * closed after the check, also when it opens late.
 */
const withConnection = (address: AppAddress, check: (connection: Duplex) => Promise<boolean>): Promise<boolean> =>
  new Promise((resolve) => {
    let late = false
    let connection: Duplex | undefined
    const timer = setTimeout(() => {
      late = true
      connection?.destroy()
      resolve(false)
    }, CHECK_MS)
    const done = (ok: boolean) => {
      connection?.destroy()
      if (late) return
      clearTimeout(timer)
      resolve(ok)
    }
    open(address).then(
      (opened) => {
        connection = opened
        if (late) return opened.destroy()
        check(opened).then(done, () => done(false))
      },
      () => done(false)
    )
  })

/**
 * Whether a replica's app accepts a connection (within 2 s). Through a forward that carries each
 * connection on a channel of its own (SSH), the channel is opened: its local listener accepts
 * whatever the far side does, so only the channel says whether the app listens there yet.
 */
export const appAccepts = (address: AppAddress): Promise<boolean> => withConnection(address, () => Promise.resolve(true))

/**
 * Whether a replica's app answers HTTP (within 2 s): `OPTIONS *`, HTTP's own request for a
 * server as a whole, on a connection of its own; any answer counts, whatever its status. A relay
 * before the app (Docker's proxy on a published port, the Kubernetes API's port-forward) accepts
 * the connection whether or not the app listens, and closes it without a byte when the app
 * refuses: a request with a body sent into it would be spent.
 */
export const appAnswers = (address: AppAddress): Promise<boolean> =>
  withConnection(address, (connection) =>
    new Promise((resolve) => {
      const settle = (ok: boolean) => {
        connection.off("data", answered)
        connection.off("end", closed)
        connection.off("close", closed)
        connection.off("error", closed)
        resolve(ok)
      }
      const answered = () => settle(true)
      const closed = () => settle(false)
      connection.once("data", answered)
      connection.once("end", closed)
      connection.once("close", closed)
      connection.once("error", closed)
      const host = address.host.includes(":") ? `[${address.host}]` : address.host
      connection.write(`OPTIONS * HTTP/1.1\r\nHost: ${host}:${address.port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`)
    }))
