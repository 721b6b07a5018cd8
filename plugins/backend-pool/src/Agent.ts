/**
 * The machine's side of the runner pool (`dstack runner join`): one outbound WebSocket to the
 * server's join route, a hello with the machine's resources and its runner's port, heartbeats,
 * and the streams the server opens to ports on this machine's loopback (its runner, a job's
 * ports). Nothing listens for the server: the machine dials out, so it may sit behind NAT.
 */
import { Buffer } from "node:buffer"
import * as net from "node:net"
import WebSocket from "ws"
import { decoder, DATA_CHUNK, deliverToStream, encode, type Frame, FrameType, type Hello } from "./internal/Frames.ts"
import type { Channel } from "./Hub.ts"

/** The WebSocket subprotocol of the join route (the server's TCP tunnel framing). */
export const JOIN_PROTOCOL = "dstack-tunnel"

export interface JoinOptions {
  /** The server's URL, e.g. `http://dstack.example:3000`. */
  readonly server: string
  readonly project: string
  /** A token of a member of the project. */
  readonly token: string
  readonly hello: Hello
}

/** A machine in the pool, until `closed` settles. */
export interface Joined {
  /** The key the server knows the machine by (its instances' hostname). */
  readonly machine: string
  /** Settles once the connection is over, with why in words. */
  readonly closed: Promise<string>
  /** Leaves the pool: says so to the server, then closes. */
  readonly leave: (reason?: string) => void
}

export class JoinRefused extends Error {
  override readonly name = "JoinRefused"
}

/** The join route's URL for a server and project. */
export const joinUrl = (server: string, project: string): string => {
  const url = new URL(`api/project/${encodeURIComponent(project)}/runner/join`, server.endsWith("/") ? server : `${server}/`)
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:"
  return url.toString()
}

/** Opens the join WebSocket as a channel; rejects with JoinRefused carrying the server's answer. */
export const connectWebSocket = (options: Pick<JoinOptions, "server" | "project" | "token">): Promise<Channel> =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(joinUrl(options.server, options.project), [JOIN_PROTOCOL], {
      headers: { authorization: `Bearer ${options.token}` },
      perMessageDeflate: false
    })
    ws.once("unexpected-response", (_req, res) => {
      // Nothing more comes over this connection: let go of its socket, so a refused join exits.
      res.once("end", () => ws.terminate())
      const chunks: Array<Buffer> = []
      res.on("data", (c: Buffer) => chunks.push(c))
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8")
        let detail = text
        try {
          const body = JSON.parse(text) as { detail?: ReadonlyArray<{ msg?: string }> | string }
          detail = typeof body.detail === "string" ? body.detail : body.detail?.map((d) => d.msg).join("; ") ?? text
        } catch { /* not JSON: the text as it is */ }
        reject(new JoinRefused(`the server refused the join (HTTP ${res.statusCode}): ${detail}`))
      })
    })
    ws.once("error", (error) => {
      ws.terminate()
      reject(error)
    })
    ws.once("open", () => {
      ws.removeAllListeners("error")
      resolve({
        // An empty message is a half-close in the tunnel's framing: frames are never empty.
        write: (bytes) => {
          if (ws.readyState === WebSocket.OPEN) ws.send(bytes, { binary: true })
        },
        end: () => ws.close(1000),
        onData: (listener) =>
          void ws.on("message", (data: Buffer | ArrayBuffer | Array<Buffer>) => {
            const chunk = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
            if (chunk.length > 0) listener(chunk)
          }),
        onClose: (listener) => {
          ws.on("close", listener)
          ws.on("error", () => ws.terminate())
        }
      })
    })
  })

/**
 * Runs the machine's side over an open channel: says hello, waits for the welcome, then
 * heartbeats and serves streams until the channel closes.
 */
export const serveMachine = (channel: Channel, hello: Hello): Promise<Joined> =>
  new Promise((resolve, reject) => {
    const streams = new Map<number, net.Socket>()
    const frames = decoder()
    let closed = false
    let welcomed = false
    let why = "the connection to the server closed"
    let finish: (reason: string) => void = () => {}
    const closedPromise = new Promise<string>((r) => (finish = r))
    const send = (type: FrameType, id: number, payload?: Uint8Array | string) => {
      if (!closed) channel.write(encode(type, id, payload))
    }
    const heartbeat = setInterval(() => send(FrameType.Ping, 0), hello.heartbeatSeconds * 1000)

    const open = (id: number, port: number) => {
      const socket = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true })
      streams.set(id, socket)
      socket.setNoDelay(true)
      socket.on("data", (chunk: Buffer) => {
        for (let at = 0; at < chunk.length; at += DATA_CHUNK) send(FrameType.Data, id, chunk.subarray(at, at + DATA_CHUNK))
      })
      socket.on("end", () => send(FrameType.End, id))
      socket.on("error", () => socket.destroy())
      socket.on("close", () => {
        if (streams.get(id) === socket) {
          streams.delete(id)
          send(FrameType.Close, id)
        }
      })
    }

    const onFrame = (frame: Frame) => {
      if (deliverToStream(streams, frame)) return
      switch (frame.type) {
        case FrameType.Welcome: {
          welcomed = true
          const { machine } = JSON.parse(frame.payload.toString("utf8")) as { machine: string }
          resolve({
            machine,
            closed: closedPromise,
            leave: (reason) => {
              send(FrameType.Bye, 0, reason ?? "")
              channel.end()
            }
          })
          return
        }
        case FrameType.Refuse:
          why = `the server dropped this machine: ${frame.payload.toString("utf8")}`
          if (!welcomed) reject(new JoinRefused(frame.payload.toString("utf8")))
          return
        case FrameType.Pong:
          return
        case FrameType.Open:
          return open(frame.id, frame.payload.readUInt16BE(0))
      }
    }

    channel.onData((bytes) => {
      const out = frames(bytes)
      if (typeof out === "string") {
        why = `the server sent a broken frame: ${out}`
        channel.end()
        return
      }
      for (const frame of out) onFrame(frame)
    })
    channel.onClose(() => {
      if (closed) return
      closed = true
      clearInterval(heartbeat)
      for (const socket of streams.values()) socket.destroy()
      streams.clear()
      if (!welcomed) reject(new JoinRefused(why))
      finish(why)
    })
    send(FrameType.Hello, 0, JSON.stringify(hello))
  })

/**
 * Joins a project's pool over the server's join route.
 *
 * @example
 * const joined = await join({ server: "http://127.0.0.1:3000", project: "main", token, hello })
 * console.log(await joined.closed)
 */
export const join = async (options: JoinOptions): Promise<Joined> =>
  serveMachine(await connectWebSocket(options), options.hello)
