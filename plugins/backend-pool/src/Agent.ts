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

/** How a machine's connection ended. */
export interface Ended {
  /** Why, in words. */
  readonly message: string
  /**
   * True when the machine must not rejoin by itself: it left, or the server refused or removed
   * it. False when the connection dropped (the server restarted, the network went).
   */
  readonly final: boolean
}

/** A machine in the pool, until `closed` settles. */
export interface Joined {
  /** The key the server knows the machine by (its instances' hostname). */
  readonly machine: string
  /** True when the server took the machine back after a drop, with its runner and jobs. */
  readonly rejoined: boolean
  /** Settles once the connection is over. */
  readonly closed: Promise<Ended>
  /** Leaves the pool: says so to the server, then closes. */
  readonly leave: (reason?: string) => void
}

/** What the machine keeps across its connections: the instance the server gave it last. */
export interface MachineState {
  instanceId?: string | undefined
}

export class JoinRefused extends Error {
  override readonly name = "JoinRefused"
  /** True when trying again would be refused too (a bad token, a hello the server refuses). */
  readonly final: boolean
  constructor(message: string, final = true) {
    super(message)
    this.final = final
  }
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
        const status = res.statusCode ?? 0
        const final = status >= 400 && status < 500 && status !== 408 && status !== 429
        reject(new JoinRefused(`the server refused the join (HTTP ${status}): ${detail}`, final))
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
            // The server finished writing (the hub closed the connection): nothing more comes.
            if (chunk.length === 0) ws.close(1000)
            else listener(chunk)
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
 * heartbeats and serves streams until the channel closes. `state` carries the instance the
 * server assigned across connections (the hello says it again).
 */
export const serveMachine = (channel: Channel, hello: Hello, state: MachineState = {}): Promise<Joined> =>
  new Promise((resolve, reject) => {
    const streams = new Map<number, net.Socket>()
    const frames = decoder()
    let closed = false
    let welcomed = false
    let why = "the connection to the server closed"
    let final = false
    let finish: (ended: Ended) => void = () => {}
    const closedPromise = new Promise<Ended>((r) => (finish = r))
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
          const { machine, rejoined } = JSON.parse(frame.payload.toString("utf8")) as { machine: string; rejoined?: boolean }
          resolve({
            machine,
            rejoined: rejoined === true,
            closed: closedPromise,
            leave: (reason) => {
              final = true
              why = "left the pool"
              send(FrameType.Bye, 0, reason ?? "")
              channel.end()
            }
          })
          return
        }
        case FrameType.Refuse:
          final = true
          why = `the server dropped this machine: ${frame.payload.toString("utf8")}`
          if (!welcomed) reject(new JoinRefused(frame.payload.toString("utf8")))
          channel.end()
          return
        case FrameType.Drop:
          why = `the server closed the connection: ${frame.payload.toString("utf8")}`
          channel.end()
          return
        case FrameType.Assign: {
          const { instanceId } = JSON.parse(frame.payload.toString("utf8")) as { instanceId: string | null }
          state.instanceId = instanceId ?? undefined
          return
        }
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
      if (!welcomed) reject(new JoinRefused(why, final))
      finish({ message: why, final })
    })
    send(FrameType.Hello, 0, JSON.stringify({ ...hello, ...(state.instanceId !== undefined ? { instanceId: state.instanceId } : {}) }))
  })

/**
 * Joins a project's pool over the server's join route, once.
 *
 * @example
 * const joined = await join({ server: "http://127.0.0.1:3000", project: "main", token, hello })
 * console.log((await joined.closed).message)
 */
export const join = async (options: JoinOptions): Promise<Joined> =>
  serveMachine(await connectWebSocket(options), options.hello)

/** What `stayJoined` reports as it goes. */
export type JoinEvent =
  | { readonly _tag: "Lost"; readonly message: string }
  | { readonly _tag: "Retrying"; readonly attempt: number; readonly delayMs: number; readonly error?: string | undefined }
  | { readonly _tag: "Rejoined"; readonly machine: string; readonly attempts: number; readonly downMs: number; readonly kept: boolean }

export interface Backoff {
  /** The first delay. Default 1 s. */
  readonly initialMs?: number
  /** The longest delay. Default 30 s. */
  readonly maxMs?: number
}

/**
 * The delay before attempt `attempt` (1, 2, …): doubling from `initialMs` up to `maxMs`, of
 * which a random half is taken off (so machines cut off together do not all return at once).
 */
export const backoffDelay = (attempt: number, backoff: Backoff = {}, random: () => number = Math.random): number => {
  const initial = backoff.initialMs ?? 1_000
  const max = backoff.maxMs ?? 30_000
  const full = Math.min(max, initial * 2 ** Math.min(attempt - 1, 30))
  return Math.round(full / 2 + (full / 2) * random())
}

export interface StayJoinedOptions extends JoinOptions {
  /** Opens a new connection to the server (default: the join WebSocket). */
  readonly connect?: () => Promise<Channel>
  readonly backoff?: Backoff
  readonly onEvent?: (event: JoinEvent) => void
}

/** A machine that rejoins by itself after its connection drops, until it leaves or is refused. */
export interface Staying {
  readonly machine: string
  /** Leaves the pool (also while waiting to rejoin). */
  readonly leave: (reason?: string) => void
  /** Settles when the machine is out for good: it left, or the server refused or removed it. */
  readonly ended: Promise<Ended>
}

/**
 * Joins, and after each dropped connection joins again with exponential backoff and jitter
 * (`backoffDelay`), as the same machine (one session for the whole run, and the instance the
 * server gave it), so the server takes it back with its runner and jobs. The first join's
 * failure rejects; afterwards only a final refusal (a token no longer accepted, a machine
 * removed) or `leave` ends it.
 */
export const stayJoined = async (options: StayJoinedOptions): Promise<Staying> => {
  const connect = options.connect ?? (() => connectWebSocket(options))
  const hello: Hello = { ...options.hello, session: options.hello.session ?? crypto.randomUUID() }
  const state: MachineState = {}
  const emit = options.onEvent ?? (() => {})
  let current = await serveMachine(await connect(), hello, state)
  let leaving: string | undefined
  let wake: () => void = () => {}
  const ended = (async (): Promise<Ended> => {
    while (true) {
      const closed = await current.closed
      if (leaving !== undefined) return { message: "left the pool", final: true }
      if (closed.final) return closed
      emit({ _tag: "Lost", message: closed.message })
      const downSince = Date.now()
      let error: string | undefined
      for (let attempt = 1; ; attempt++) {
        const delayMs = backoffDelay(attempt, options.backoff)
        emit({ _tag: "Retrying", attempt, delayMs, error })
        await new Promise<void>((r) => {
          const timer = setTimeout(r, delayMs)
          wake = () => {
            clearTimeout(timer)
            r()
          }
        })
        if (leaving !== undefined) return { message: "left the pool", final: true }
        try {
          current = await serveMachine(await connect(), hello, state)
        } catch (e) {
          if (e instanceof JoinRefused && e.final) return { message: e.message, final: true }
          error = e instanceof Error ? e.message || e.name : String(e)
          continue
        }
        if (leaving !== undefined) current.leave(leaving)
        emit({ _tag: "Rejoined", machine: current.machine, attempts: attempt, downMs: Date.now() - downSince, kept: current.rejoined })
        break
      }
    }
  })()
  return {
    machine: current.machine,
    leave: (reason) => {
      leaving = reason ?? ""
      current.leave(reason)
      wake()
    },
    ended
  }
}
