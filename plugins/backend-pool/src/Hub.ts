/**
 * The server's side of the runner pool: the machines joined to each project, each over its one
 * connection (a byte stream of frames, src/internal/Frames.ts). It checks the machine's hello,
 * watches its heartbeats (a connection silent for three intervals is dropped), carries TCP
 * streams to ports on the machine's loopback (`pipe`), and remembers why a machine went away,
 * for the backend to tell its instances' jobs.
 *
 * A machine whose connection drops is kept, away, for `rejoinGraceMs`: the same machine (same
 * name and session) joining again in that time takes its place back, with the instance that
 * held it, and the jobs its runner kept running are reached again. A machine that does not
 * come back, leaves, or is removed is gone, with why. Multi-replica servers: a machine is joined
 * to the one replica its connection reached; the others do not see it.
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
  hello: Hello
  readonly joinedAt: Date
  lastSeen: number
  /** The instance that has the machine now, if any. */
  takenBy: string | undefined
  /** Since when its connection is gone (epoch ms), while it may still rejoin; undefined while connected. */
  awaySince: number | undefined
}

/** Why a machine is no longer joined. */
export interface Departure {
  readonly at: Date
  readonly message: string
}

export interface HubOptions {
  /** How long a machine may take to say hello after connecting. Default 10 s. */
  readonly helloTimeoutMs?: number
  /** How many heartbeat intervals a machine may miss before its connection is dropped. Default 3. */
  readonly missedHeartbeats?: number
  /**
   * How long a machine whose connection dropped (and a machine a restarted server has not seen
   * yet) may take to rejoin before it is gone and its instance's job fails. Default 30 s.
   */
  readonly rejoinGraceMs?: number
}

export const machineKey = (project: string, name: string): string => `${name}.${project}.pool`

const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/

const validHello = (u: unknown): string | undefined => {
  const h = u as Partial<Hello> | null
  if (typeof h !== "object" || h === null) return "the hello is not a JSON object"
  if (typeof h.name !== "string" || !NAME.test(h.name)) return `name ${JSON.stringify(h.name)} is not a machine name (lowercase letters, digits and '-', up to 63)`
  if (!Number.isInteger(h.runnerPort) || h.runnerPort! < 1 || h.runnerPort! > 65535) return `runnerPort ${JSON.stringify(h.runnerPort)} is not a port`
  if (typeof h.heartbeatSeconds !== "number" || !(h.heartbeatSeconds >= 1 && h.heartbeatSeconds <= 300)) return `heartbeatSeconds ${JSON.stringify(h.heartbeatSeconds)} is not 1 to 300`
  if (h.session !== undefined && (typeof h.session !== "string" || h.session.length === 0 || h.session.length > 100)) return `session ${JSON.stringify(h.session)} is not 1 to 100 characters`
  if (h.instanceId !== undefined && (typeof h.instanceId !== "string" || h.instanceId.length === 0 || h.instanceId.length > 100)) return `instanceId ${JSON.stringify(h.instanceId)} is not 1 to 100 characters`
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

interface Entry {
  readonly machine: Machine
  /** The live connection; undefined while the machine is away. */
  connection: Connection | undefined
  /** Why the connection went, while away. */
  awayWhy?: string
  awayTimer?: ReturnType<typeof setTimeout>
}

export interface Hub {
  /** Takes a new connection of `project`: it must say hello, then it is a machine of the pool. */
  readonly accept: (project: string, channel: Channel) => void
  /** The machines of a project connected now (`away`: and those away, which may still rejoin). */
  readonly machines: (project: string, away?: boolean) => ReadonlyArray<Machine>
  /** The machine of `key` if connected now. */
  readonly machine: (key: string) => Machine | undefined
  /** The machine of `key` if connected or away (its connection dropped, it may still rejoin). */
  readonly known: (key: string) => Machine | undefined
  /**
   * Why the machine of `key` left, when it was joined once and is not now (nor away); with
   * `last`, the last time it left even if it joined again since.
   */
  readonly departure: (key: string, last?: boolean) => Departure | undefined
  /** When this hub started (a machine it never saw may be rejoining after a server restart). */
  readonly startedAt: Date
  readonly rejoinGraceMs: number
  /** Gives the machine to an instance (undefined frees it), and tells the machine, which says so when it rejoins. */
  readonly assign: (key: string, instanceId: string | undefined) => void
  /**
   * Removes a joined or away machine from the pool for good: it is told so (and does not
   * rejoin by itself). False when no such machine is known.
   */
  readonly remove: (key: string, why: string) => boolean
  /**
   * Carries `socket` to `port` on the machine's loopback until either side closes; false when
   * the machine is not connected (the socket is then left to the caller).
   */
  readonly pipe: (key: string, socket: net.Socket, port: number) => boolean
  /** Drops every connection (server shutdown): the machines are told they may rejoin. */
  readonly close: () => void
  /**
   * Keeps the machines' instance rows in the server's state store from now on (the join route
   * calls it with the server's store before the first machine joins); once only.
   */
  readonly recordIn: (make: (hub: Hub) => Observer) => void
  /** True once `recordIn` was called: jobs go to the machines' instance rows, not to offers. */
  readonly recording: () => boolean
}

/** Told of each machine's comings and goings (PoolInstances keeps its instance row). */
export interface Observer {
  readonly joined: (m: Machine) => void
  readonly away: (m: Machine) => void
  readonly back: (m: Machine) => void
  readonly gone: (m: Machine, message: string) => void
}

export const make = (options: HubOptions = {}): Hub => {
  const helloTimeoutMs = options.helloTimeoutMs ?? 10_000
  const missed = options.missedHeartbeats ?? 3
  const rejoinGraceMs = options.rejoinGraceMs ?? 30_000
  const entries = new Map<string, Entry>()
  const departures = new Map<string, Departure>()
  let observer: Observer | undefined
  let watchdog: ReturnType<typeof setInterval> | undefined

  const send = (c: Connection, type: FrameType, id: number, payload?: Uint8Array | string) => {
    if (!c.closed) c.channel.write(encode(type, id, payload))
  }

  const depart = (entry: Entry, message: string) => {
    if (entries.get(entry.machine.key) !== entry) return
    clearTimeout(entry.awayTimer)
    entries.delete(entry.machine.key)
    departures.set(entry.machine.key, { at: new Date(), message })
    if (departures.size > 10_000) departures.delete(departures.keys().next().value!)
    observer?.gone(entry.machine, message)
  }

  /**
   * Closes a connection: `tell` sends the machine why first (`Refuse`: for good, `Drop`: it may
   * rejoin). `gone` departs its machine with that message at once; otherwise the machine is away
   * and departs only if it does not rejoin within the grace.
   */
  const closeConnection = (c: Connection, message: string, how: { tell?: typeof FrameType.Refuse | typeof FrameType.Drop; gone: boolean }) => {
    if (c.closed) return
    if (how.tell !== undefined) send(c, how.tell, 0, message)
    c.closed = true
    for (const socket of c.streams.values()) socket.destroy()
    c.streams.clear()
    c.channel.end()
    const entry = c.machine === undefined ? undefined : entries.get(c.machine.key)
    if (entry !== undefined && entry.connection === c) {
      if (how.gone) depart(entry, message)
      else {
        entry.connection = undefined
        entry.awayWhy = message
        entry.machine.awaySince = Date.now()
        entry.awayTimer = setTimeout(() => depart(entry, `${message}, and did not rejoin within ${Math.round(rejoinGraceMs / 1000)} s`), rejoinGraceMs)
        ;(entry.awayTimer as { unref?: () => void }).unref?.()
        observer?.away(entry.machine)
      }
    }
    if (![...entries.values()].some((e) => e.connection !== undefined) && watchdog !== undefined) {
      clearInterval(watchdog)
      watchdog = undefined
    }
  }

  const watch = () => {
    if (watchdog !== undefined) return
    watchdog = setInterval(() => {
      const now = Date.now()
      for (const { machine, connection } of [...entries.values()]) {
        if (connection === undefined) continue
        const silentMs = now - machine.lastSeen
        if (silentMs > missed * machine.hello.heartbeatSeconds * 1000) {
          closeConnection(connection, `pool machine ${machine.name} stopped heartbeating (nothing heard for ${Math.round(silentMs / 1000)} s, heartbeat every ${machine.hello.heartbeatSeconds} s)`, { tell: FrameType.Drop, gone: false })
        }
      }
    }, 1000)
    ;(watchdog as { unref?: () => void }).unref?.()
  }

  /** The machine of `c` says hello: it joins, takes the place of its own older connection, or rejoins. */
  const welcome = (project: string, c: Connection, h: Hello) => {
    const key = machineKey(project, h.name)
    const entry = entries.get(key)
    const sameSession = entry !== undefined && h.session !== undefined && entry.machine.hello.session === h.session
    if (entry !== undefined && sameSession) {
      // The same run of the machine's agent: its runner and its jobs are still there. An older
      // connection the server still holds (a network that cut without a reset) is replaced.
      const old = entry.connection
      if (old !== undefined) {
        old.machine = undefined
        closeConnection(old, `pool machine ${h.name} connected again`, { gone: false })
      }
      clearTimeout(entry.awayTimer)
      delete entry.awayWhy
      entry.connection = c
      entry.machine.hello = h
      entry.machine.awaySince = undefined
      entry.machine.lastSeen = Date.now()
      c.machine = entry.machine
      send(c, FrameType.Welcome, 0, JSON.stringify({ machine: key, rejoined: true }))
      observer?.back(entry.machine)
      watch()
      return
    }
    if (entry !== undefined && entry.connection !== undefined) {
      return closeConnection(c, `refused: a machine named ${h.name} is already joined to project ${project} (give another --name)`, { tell: FrameType.Refuse, gone: true })
    }
    if (entry !== undefined) {
      // Away, and back as another run of the agent: its runner started again, its jobs are gone.
      depart(entry, `pool machine ${h.name} joined again as a new process (${entry.awayWhy ?? "its connection dropped"}): the runner this job ran on is gone`)
    }
    const machine: Machine = {
      project,
      name: h.name,
      key,
      hello: h,
      joinedAt: new Date(),
      lastSeen: Date.now(),
      // A machine a restarted server has not seen says which instance holds it.
      takenBy: entry === undefined && !departures.has(key) ? h.instanceId : undefined,
      awaySince: undefined
    }
    c.machine = machine
    entries.set(key, { machine, connection: c })
    send(c, FrameType.Welcome, 0, JSON.stringify({ machine: key, rejoined: false }))
    if (machine.takenBy !== h.instanceId) send(c, FrameType.Assign, 0, JSON.stringify({ instanceId: null }))
    observer?.joined(machine)
    watch()
  }

  const onFrame = (project: string, c: Connection, frame: Frame) => {
    if (c.machine === undefined) {
      if (frame.type !== FrameType.Hello) return closeConnection(c, `the first frame must be a hello, got type ${frame.type}`, { tell: FrameType.Refuse, gone: true })
      let hello: unknown
      try {
        hello = JSON.parse(frame.payload.toString("utf8"))
      } catch (error) {
        return closeConnection(c, `the hello is not JSON: ${(error as Error).message}`, { tell: FrameType.Refuse, gone: true })
      }
      const problem = validHello(hello)
      if (problem !== undefined) return closeConnection(c, `refused: ${problem}`, { tell: FrameType.Refuse, gone: true })
      return welcome(project, c, hello as Hello)
    }
    c.machine.lastSeen = Date.now()
    if (deliverToStream(c.streams, frame)) return
    switch (frame.type) {
      case FrameType.Ping:
        return send(c, FrameType.Pong, 0)
      case FrameType.Bye:
        return closeConnection(c, `pool machine ${c.machine.name} left the pool${frame.payload.length > 0 ? `: ${frame.payload.toString("utf8")}` : ""}`, { gone: true })
      default:
        return closeConnection(c, `unexpected frame type ${frame.type}`, { tell: FrameType.Refuse, gone: true })
    }
  }

  const hub: Hub = {
    recordIn: (make) => {
      observer ??= make(hub)
    },
    recording: () => observer !== undefined,
    accept: (project, channel) => {
      const c: Connection = { channel, streams: new Map(), nextId: 1, closed: false }
      const frames = decoder()
      const helloTimer = setTimeout(() => {
        if (c.machine === undefined) closeConnection(c, `no hello within ${helloTimeoutMs / 1000} s`, { tell: FrameType.Refuse, gone: true })
      }, helloTimeoutMs)
      ;(helloTimer as { unref?: () => void }).unref?.()
      channel.onData((bytes) => {
        if (c.closed) return
        const out = frames(bytes)
        if (typeof out === "string") return closeConnection(c, out, { tell: FrameType.Refuse, gone: true })
        for (const frame of out) onFrame(project, c, frame)
      })
      channel.onClose(() => {
        clearTimeout(helloTimer)
        closeConnection(c, c.machine === undefined ? "closed before its hello" : `pool machine ${c.machine.name} lost its connection to the server`, { gone: false })
      })
    },
    machines: (project, away = false) =>
      [...entries.values()].filter((e) => (away || e.connection !== undefined) && e.machine.project === project).map((e) => e.machine),
    machine: (key) => {
      const entry = entries.get(key)
      return entry?.connection === undefined ? undefined : entry.machine
    },
    known: (key) => entries.get(key)?.machine,
    departure: (key, last = false) => (entries.has(key) && !last ? undefined : departures.get(key)),
    startedAt: new Date(),
    rejoinGraceMs,
    assign: (key, instanceId) => {
      const entry = entries.get(key)
      if (entry === undefined) return
      entry.machine.takenBy = instanceId
      if (entry.connection !== undefined) send(entry.connection, FrameType.Assign, 0, JSON.stringify({ instanceId: instanceId ?? null }))
    },
    remove: (key, why) => {
      const entry = entries.get(key)
      if (entry === undefined) return false
      const message = `pool machine ${entry.machine.name} was removed from the pool: ${why}`
      if (entry.connection !== undefined) closeConnection(entry.connection, message, { tell: FrameType.Refuse, gone: true })
      else depart(entry, message)
      return true
    },
    pipe: (key, socket, port) => {
      const c = entries.get(key)?.connection
      if (c === undefined) return false
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
      for (const entry of [...entries.values()]) {
        clearTimeout(entry.awayTimer)
        if (entry.connection !== undefined) closeConnection(entry.connection, "the server is shutting down", { tell: FrameType.Drop, gone: false })
        clearTimeout(entry.awayTimer)
      }
      entries.clear()
    }
  }
  return hub
}
