/**
 * The server's side of the runner pool: the machines joined to each project, each over its one
 * connection (a byte stream of frames, src/internal/Frames.ts). It checks the machine's hello,
 * watches its heartbeats (a machine silent for three intervals is dropped), carries TCP streams
 * to ports on the machine's loopback (`pipe`), and remembers why a machine went away, for the
 * backend to tell its instances' jobs. Multi-replica servers: a machine is joined to the one
 * replica its connection reached; the others do not see it.
 */
import { Buffer } from "node:buffer"
import type * as net from "node:net"
import { decoder, DATA_CHUNK, deliverToStream, encode, type Frame, FrameType, type Hello } from "./internal/Frames.ts"

/** A byte stream to one machine (the loopback TCP end of its WebSocket, or a socket in tests). */
export interface Channel {
  readonly write: (bytes: Uint8Array) => void
  readonly end: () => void
  readonly onData: (listener: (bytes: Uint8Array) => void) => void
  readonly onClose: (listener: () => void) => void
}

/** A `net.Socket` as a channel. */
export const socketChannel = (socket: net.Socket): Channel => ({
  write: (bytes) => void socket.write(bytes),
  end: () => void socket.end(),
  onData: (listener) => void socket.on("data", listener),
  onClose: (listener) => {
    socket.on("close", listener)
    socket.on("error", () => socket.destroy())
  }
})

/** A joined machine as the server sees it. */
export interface Machine {
  readonly project: string
  readonly name: string
  /** The key the transport reaches it by: the `hostname` of its instances (`NAME.PROJECT.pool`). */
  readonly key: string
  readonly hello: Hello
  readonly joinedAt: Date
  lastSeen: number
  /** The instance that has the machine now, if any. */
  takenBy: string | undefined
}

/** Why a machine is no longer joined. */
export interface Departure {
  readonly at: Date
  readonly message: string
}

export interface HubOptions {
  /** How long a machine may take to say hello after connecting. Default 10 s. */
  readonly helloTimeoutMs?: number
  /** How many heartbeat intervals a machine may miss before it is dropped. Default 3. */
  readonly missedHeartbeats?: number
}

export const machineKey = (project: string, name: string): string => `${name}.${project}.pool`

const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/

const validHello = (u: unknown): string | undefined => {
  const h = u as Partial<Hello> | null
  if (typeof h !== "object" || h === null) return "the hello is not a JSON object"
  if (typeof h.name !== "string" || !NAME.test(h.name)) return `name ${JSON.stringify(h.name)} is not a machine name (lowercase letters, digits and '-', up to 63)`
  if (!Number.isInteger(h.runnerPort) || h.runnerPort! < 1 || h.runnerPort! > 65535) return `runnerPort ${JSON.stringify(h.runnerPort)} is not a port`
  if (typeof h.heartbeatSeconds !== "number" || !(h.heartbeatSeconds >= 1 && h.heartbeatSeconds <= 300)) return `heartbeatSeconds ${JSON.stringify(h.heartbeatSeconds)} is not 1 to 300`
  const r = h.resources
  if (typeof r !== "object" || r === null || !(r.cpus >= 1) || !(r.memoryMib >= 0) || !(r.diskMib >= 0) || !Array.isArray(r.gpus)) {
    return "resources must give cpus (≥ 1), memoryMib, diskMib and gpus"
  }
  return undefined
}

interface Connection {
  readonly channel: Channel
  readonly streams: Map<number, net.Socket>
  nextId: number
  machine?: Machine
  closed: boolean
}

export interface Hub {
  /** Takes a new connection of `project`: it must say hello, then it is a machine of the pool. */
  readonly accept: (project: string, channel: Channel) => void
  /** The machines joined to a project now. */
  readonly machines: (project: string) => ReadonlyArray<Machine>
  readonly machine: (key: string) => Machine | undefined
  /** Why the machine of `key` left, when it was joined once and is not now. */
  readonly departure: (key: string) => Departure | undefined
  /**
   * Carries `socket` to `port` on the machine's loopback until either side closes; false when
   * the machine is not joined (the socket is then left to the caller).
   */
  readonly pipe: (key: string, socket: net.Socket, port: number) => boolean
  /** Drops every machine (server shutdown). */
  readonly close: () => void
}

export const make = (options: HubOptions = {}): Hub => {
  const helloTimeoutMs = options.helloTimeoutMs ?? 10_000
  const missed = options.missedHeartbeats ?? 3
  const joined = new Map<string, { machine: Machine; connection: Connection }>()
  const departures = new Map<string, Departure>()
  let watchdog: ReturnType<typeof setInterval> | undefined

  const send = (c: Connection, type: FrameType, id: number, payload?: Uint8Array | string) => {
    if (!c.closed) c.channel.write(encode(type, id, payload))
  }

  const drop = (c: Connection, message: string, tell: boolean) => {
    if (c.closed) return
    if (tell) send(c, FrameType.Refuse, 0, message)
    c.closed = true
    for (const socket of c.streams.values()) socket.destroy()
    c.streams.clear()
    c.channel.end()
    const m = c.machine
    if (m !== undefined && joined.get(m.key)?.connection === c) {
      joined.delete(m.key)
      departures.set(m.key, { at: new Date(), message })
      if (departures.size > 10_000) departures.delete(departures.keys().next().value!)
    }
    if (joined.size === 0 && watchdog !== undefined) {
      clearInterval(watchdog)
      watchdog = undefined
    }
  }

  const watch = () => {
    if (watchdog !== undefined) return
    watchdog = setInterval(() => {
      const now = Date.now()
      for (const { machine, connection } of [...joined.values()]) {
        const silentMs = now - machine.lastSeen
        if (silentMs > missed * machine.hello.heartbeatSeconds * 1000) {
          drop(connection, `pool machine ${machine.name} stopped heartbeating (nothing heard for ${Math.round(silentMs / 1000)} s, heartbeat every ${machine.hello.heartbeatSeconds} s)`, true)
        }
      }
    }, 1000)
    ;(watchdog as { unref?: () => void }).unref?.()
  }

  const onFrame = (project: string, c: Connection, frame: Frame) => {
    if (c.machine === undefined) {
      if (frame.type !== FrameType.Hello) return drop(c, `the first frame must be a hello, got type ${frame.type}`, true)
      let hello: unknown
      try {
        hello = JSON.parse(frame.payload.toString("utf8"))
      } catch (error) {
        return drop(c, `the hello is not JSON: ${(error as Error).message}`, true)
      }
      const problem = validHello(hello)
      if (problem !== undefined) return drop(c, `refused: ${problem}`, true)
      const h = hello as Hello
      const key = machineKey(project, h.name)
      if (joined.has(key)) return drop(c, `refused: a machine named ${h.name} is already joined to project ${project} (give another --name)`, true)
      const machine: Machine = { project, name: h.name, key, hello: h, joinedAt: new Date(), lastSeen: Date.now(), takenBy: undefined }
      c.machine = machine
      joined.set(key, { machine, connection: c })
      departures.delete(key)
      send(c, FrameType.Welcome, 0, JSON.stringify({ machine: key }))
      watch()
      return
    }
    c.machine.lastSeen = Date.now()
    if (deliverToStream(c.streams, frame)) return
    switch (frame.type) {
      case FrameType.Ping:
        return send(c, FrameType.Pong, 0)
      case FrameType.Bye:
        return drop(c, `pool machine ${c.machine.name} left the pool${frame.payload.length > 0 ? `: ${frame.payload.toString("utf8")}` : ""}`, false)
      default:
        return drop(c, `unexpected frame type ${frame.type}`, true)
    }
  }

  return {
    accept: (project, channel) => {
      const c: Connection = { channel, streams: new Map(), nextId: 1, closed: false }
      const frames = decoder()
      const helloTimer = setTimeout(() => {
        if (c.machine === undefined) drop(c, `no hello within ${helloTimeoutMs / 1000} s`, true)
      }, helloTimeoutMs)
      ;(helloTimer as { unref?: () => void }).unref?.()
      channel.onData((bytes) => {
        if (c.closed) return
        const out = frames(bytes)
        if (typeof out === "string") return drop(c, out, true)
        for (const frame of out) onFrame(project, c, frame)
      })
      channel.onClose(() => {
        clearTimeout(helloTimer)
        drop(c, c.machine === undefined ? "closed before its hello" : `pool machine ${c.machine.name} lost its connection to the server`, false)
      })
    },
    machines: (project) => [...joined.values()].filter((j) => j.machine.project === project).map((j) => j.machine),
    machine: (key) => joined.get(key)?.machine,
    departure: (key) => (joined.has(key) ? undefined : departures.get(key)),
    pipe: (key, socket, port) => {
      const entry = joined.get(key)
      if (entry === undefined) return false
      const c = entry.connection
      const id = c.nextId++
      c.streams.set(id, socket)
      const portBytes = Buffer.allocUnsafe(2)
      portBytes.writeUInt16BE(port, 0)
      send(c, FrameType.Open, id, portBytes)
      socket.on("data", (chunk: Buffer) => {
        for (let at = 0; at < chunk.length; at += DATA_CHUNK) send(c, FrameType.Data, id, chunk.subarray(at, at + DATA_CHUNK))
      })
      socket.on("end", () => send(c, FrameType.End, id))
      socket.on("error", () => socket.destroy())
      socket.on("close", () => {
        if (c.streams.get(id) === socket) {
          c.streams.delete(id)
          send(c, FrameType.Close, id)
        }
      })
      return true
    },
    close: () => {
      for (const { connection } of [...joined.values()]) drop(connection, "the server is shutting down", true)
    }
  }
}
