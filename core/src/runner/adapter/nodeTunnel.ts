/**
 * The Node.js side of a TCP tunnel over a WebSocket (`TunnelTarget`): the server accepts the
 * WebSocket itself (with `ws`) once the TCP port answers, then carries bytes both ways with
 * backpressure; an empty binary message is a half-close. The same framing as the client's
 * (`@dstack-ts/client`'s Tunnel.ts).
 */
import type { IncomingMessage } from "node:http"
import * as net from "node:net"
import type { Duplex } from "node:stream"
import { WebSocketServer, type WebSocket } from "ws"
import type { MessagesTarget, SocketTarget, TunnelTarget } from "./types.ts"

/** Bytes queued on the WebSocket past which reading the TCP side pauses. */
const HIGH_WATER = 1 << 20

/** Carries `tcp` (a TCP socket, or the transport's own stream) over `ws` until either closes; `onEnd` is called once. */
export const bridge = (ws: WebSocket, tcp: Duplex, onEnd: (failed: boolean) => void): void => {
  let ended = false
  const end = (failed: boolean) => {
    if (ended) return
    ended = true
    tcp.destroy()
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(failed ? 1011 : 1000)
    onEnd(failed)
  }
  if (tcp instanceof net.Socket) tcp.setNoDelay(true)
  let paused = false
  const sent = () => {
    if (paused && ws.bufferedAmount < HIGH_WATER / 2) {
      paused = false
      tcp.resume()
    }
  }
  // What one read of the TCP side brought goes as one message: an SSH channel (the transport's
  // own stream) hands its data on packet by packet (32 KiB each), several to a read, and a
  // message costs a frame here and a write on the client's side.
  let pending: Array<Buffer> = []
  let pendingBytes = 0
  const flush = () => {
    if (pending.length === 0) return
    const chunk = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes)
    pending = []
    pendingBytes = 0
    if (ws.readyState !== ws.OPEN) return
    ws.send(chunk, { binary: true }, sent)
    if (ws.bufferedAmount > HIGH_WATER) {
      paused = true
      tcp.pause()
    }
  }
  tcp.on("data", (chunk: Buffer) => {
    if (ws.readyState !== ws.OPEN) return
    if (pending.length === 0) process.nextTick(flush)
    pending.push(chunk)
    pendingBytes += chunk.length
  })
  // The TCP peer finished writing: say so after what it wrote, and keep carrying the other way.
  tcp.on("end", () => {
    flush()
    if (ws.readyState === ws.OPEN) ws.send(Buffer.alloc(0), { binary: true })
  })
  tcp.on("error", () => end(true))
  tcp.on("close", () => end(false))
  ws.on("message", (data: Buffer | ArrayBuffer | Array<Buffer>) => {
    const chunk = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
    if (chunk.length === 0) {
      tcp.end()
      return
    }
    if (!tcp.write(chunk)) {
      ws.pause()
      tcp.once("drain", () => ws.resume())
    }
  })
  ws.on("error", () => end(true))
  ws.on("close", () => end(false))
}

const servers = new Map<string, WebSocketServer>()
const serverFor = (protocol: string): WebSocketServer => {
  let wss = servers.get(protocol)
  if (wss === undefined) {
    wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      handleProtocols: (offered) => (offered.has(protocol) ? protocol : false)
    })
    servers.set(protocol, wss)
  }
  return wss
}

/** Opens the target's connection: its own stream when it has one, else TCP to `host:port`. */
const connectTarget = (target: TunnelTarget): Promise<Duplex> =>
  target.connect !== undefined
    ? target.connect()
    : new Promise((resolve, reject) => {
      const tcp = net.connect({ host: target.host, port: target.port, allowHalfOpen: true })
      tcp.once("error", reject)
      tcp.once("connect", () => {
        tcp.off("error", reject)
        resolve(tcp)
      })
    })

/**
 * Connects to the target, then accepts the WebSocket and bridges the two. A target that does not
 * answer gets `refuse` (an HTTP answer on the socket) and `done(true)`.
 */
export const acceptTunnel = (
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  target: TunnelTarget,
  refuse: (status: number, message: string) => void
): void => {
  let bridged = false
  let over = false
  let gone = false
  const done = (failed: boolean) => {
    if (over) return
    over = true
    target.done(failed)
  }
  // The client went away before the bridge was up (or `ws` refused its handshake): the job's
  // side goes too.
  socket.once("close", () => {
    gone = true
    if (!bridged) done(true)
  })
  connectTarget(target).then(
    (tcp) => {
      if (gone) {
        tcp.destroy()
        return
      }
      tcp.on("error", () => {}) // until the bridge handles it (an error before the handshake ends)
      serverFor(target.protocol).handleUpgrade(req, socket, head, (ws) => {
        bridged = true
        bridge(ws, tcp, done)
      })
      // `ws` refused the handshake (it answered the socket and closed it): the stream goes.
      socket.once("close", () => {
        if (!bridged) tcp.destroy()
      })
    },
    (error: unknown) => {
      done(true)
      if (!gone) refuse(502, `cannot reach port ${target.port} of the job: ${error instanceof Error ? error.message : String(error)}`)
    }
  )
}

let plain: WebSocketServer | undefined

/**
 * Accepts the WebSocket and sends what `target.messages` yields, one binary message each, each
 * after the previous one was written out (a slow client holds the producer back); then closes.
 */
export const acceptMessages = (req: IncomingMessage, socket: Duplex, head: Buffer, target: MessagesTarget): void => {
  plain ??= new WebSocketServer({ noServer: true, perMessageDeflate: false })
  plain.handleUpgrade(req, socket, head, (ws) => {
    const aborted = new AbortController()
    ws.on("close", () => aborted.abort())
    ws.on("error", () => aborted.abort())
    void (async () => {
      try {
        for await (const chunk of target.messages(aborted.signal)) {
          if (aborted.signal.aborted) return
          await new Promise<void>((resolve, reject) => ws.send(chunk, { binary: true }, (error) => (error ? reject(error) : resolve())))
        }
        if (ws.readyState === ws.OPEN) ws.close(1000)
      } catch {
        if (ws.readyState === ws.OPEN) ws.close(1011)
      }
    })()
  })
}

/** Accepts the WebSocket and hands it to `target.open`: binary messages as bytes, text as strings. */
export const acceptSocket = (req: IncomingMessage, socket: Duplex, head: Buffer, target: SocketTarget): void => {
  plain ??= new WebSocketServer({ noServer: true, perMessageDeflate: false })
  plain.handleUpgrade(req, socket, head, (ws) => {
    const handlers = target.open({
      send: (data) => {
        if (ws.readyState === ws.OPEN) ws.send(data, { binary: typeof data !== "string" })
      },
      close: (code, reason) => {
        if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, reason)
      }
    })
    let closed = false
    const onClosed = () => {
      if (closed) return
      closed = true
      handlers.closed()
    }
    ws.on("message", (data: Buffer | ArrayBuffer | Array<Buffer>, isBinary: boolean) => {
      const bytes = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
      handlers.message(isBinary ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) : bytes.toString("utf8"))
    })
    ws.on("close", onClosed)
    ws.on("error", onClosed)
  })
}
