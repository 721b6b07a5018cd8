/**
 * Sockets for the `postgres` driver that give up on a database that owes an answer and stays
 * silent: a server that accepts connections and never answers (hung, partitioned, SIGSTOPped)
 * would otherwise hold every query forever, since the driver has no query timeout of its own.
 *
 * The watchdog follows the framing of the PostgreSQL protocol on both directions of a plain
 * connection: each Sync or simple Query the client writes is owed one ReadyForQuery, and
 * anything written is owed some byte back. While an answer is owed and no byte arrives for
 * `silenceMs`, the socket is destroyed with an error carrying SQLSTATE class 08 (connection
 * exception); the driver fails the connection's queries with it and opens a fresh connection
 * for the next ones. LISTEN notifications arriving on an idle connection owe nothing.
 */
import * as net from "node:net"

/** The options the driver passes to its `socket` factory (the parts used here). */
export interface DriverSocketOptions {
  readonly host: ReadonlyArray<string>
  readonly port: ReadonlyArray<number>
  readonly path?: string | false
  readonly ssl?: unknown
}

/** The error a silent connection is destroyed with. */
export class DatabaseSilent extends Error {
  /** SQLSTATE 08006, connection_failure: the store reads it as `Unavailable`. */
  readonly code = "08006"
  constructor(readonly where: string, readonly silenceMs: number, readonly queryTimeoutMs: number) {
    super(
      `PostgreSQL at ${where} did not answer for ${silenceMs / 1000} s (query_timeout ${queryTimeoutMs / 1000} s + ${(silenceMs - queryTimeoutMs) / 1000} s); the connection was closed`
    )
  }
}

const CANCEL_REQUEST = 80877102
const SSL_REQUEST = 80877103

/**
 * Counts the messages of one direction of the protocol. `untypedFirst`: the first message
 * (startup, SSL or cancel request) has a length but no type byte.
 */
const framer = (untypedFirst: boolean, onMessage: (type: number, first: Buffer | undefined) => void) => {
  let untyped = untypedFirst
  let header = Buffer.alloc(0)
  let remaining = 0
  let type = 0
  return (chunk: Buffer) => {
    let at = 0
    while (at < chunk.length) {
      if (remaining > 0) {
        const take = Math.min(remaining, chunk.length - at)
        remaining -= take
        at += take
        continue
      }
      const headerLength = untyped ? 8 : 5
      const take = Math.min(headerLength - header.length, chunk.length - at)
      header = Buffer.concat([header, chunk.subarray(at, at + take)])
      at += take
      if (header.length < headerLength) return
      if (untyped) {
        // int32 length, int32 code (protocol version, or a cancel/SSL request's code).
        untyped = false
        remaining = header.readInt32BE(0) - 8
        onMessage(0, header)
      } else {
        type = header[0]!
        remaining = header.readInt32BE(1) - 4
        onMessage(type, undefined)
      }
      header = Buffer.alloc(0)
    }
  }
}

const Z = "Z".charCodeAt(0)
const S = "S".charCodeAt(0)
const Q = "Q".charCodeAt(0)

/** Watches `socket` as described above; TLS connections are left unwatched (see README). */
const watch = (socket: net.Socket, where: string, silenceMs: number, queryTimeoutMs: number): void => {
  let owedReady = 0
  let wroteSinceRead = false
  let timer: ReturnType<typeof setTimeout> | undefined
  const owed = () => owedReady > 0 || wroteSinceRead
  const disarm = () => {
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
  }
  const arm = () => {
    disarm()
    timer = setTimeout(() => socket.destroy(new DatabaseSilent(where, silenceMs, queryTimeoutMs)), silenceMs)
    timer.unref?.()
  }
  const outgoing = framer(true, (type, first) => {
    if (type === 0) {
      const code = first!.readInt32BE(4)
      // A startup message is answered with ReadyForQuery; a cancel request with nothing.
      if (code !== CANCEL_REQUEST && code !== SSL_REQUEST) owedReady++
    } else if (type === S || type === Q) owedReady++
  })
  const incoming = framer(false, (type) => {
    if (type === Z && owedReady > 0) owedReady--
  })
  const write = socket.write.bind(socket) as (...args: Array<unknown>) => boolean
  socket.write = ((chunk: unknown, ...rest: Array<unknown>) => {
    if (Buffer.isBuffer(chunk) || chunk instanceof Uint8Array) outgoing(Buffer.from(chunk as Uint8Array))
    wroteSinceRead = true
    if (timer === undefined) arm()
    return write(chunk, ...rest)
  }) as typeof socket.write
  socket.on("data", (chunk: Buffer) => {
    incoming(chunk)
    wroteSinceRead = false
    if (owed()) arm()
    else disarm()
  })
  socket.on("close", disarm)
}

/**
 * A `socket` option for the driver: connects to its hosts in turn (or its Unix socket) and, on
 * plain connections, destroys one that owes an answer and stays silent for `queryTimeoutMs` and
 * `graceMs` more (the database's own statement timeout answers first when it can).
 */
export const socketFactory = (queryTimeoutMs: number, graceMs: number) => {
  const silenceMs = queryTimeoutMs + graceMs
  let next = 0
  return (options: DriverSocketOptions): net.Socket => {
    let socket: net.Socket
    let where: string
    if (typeof options.path === "string" && options.path !== "") {
      socket = net.connect(options.path)
      where = options.path
    } else {
      const i = next++ % Math.max(options.host.length, 1)
      const host = options.host[i] ?? "localhost"
      const port = options.port[i] ?? options.port[0] ?? 5432
      socket = net.connect({ host, port })
      Object.assign(socket, { host, port })
      where = `${host}:${port}`
    }
    // Under TLS the driver wraps this socket's handle, and its bytes bypass what is watched.
    if (options.ssl === false || options.ssl === undefined || options.ssl === null) watch(socket, where, silenceMs, queryTimeoutMs)
    return socket
  }
}
