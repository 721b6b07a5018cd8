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
 *
 * TLS (`sslmode`): the driver would wrap the socket it is given in TLS itself, and its
 * plaintext would then pass where nothing watches it. So the store gives the driver `ssl: false`
 * and this factory negotiates TLS as the driver would (SSLRequest, then the handshake on the
 * same socket; `sslnegotiation=direct`: the handshake at once, ALPN `postgresql`), with the
 * driver's `ssl` setting, and hands the driver the TLS socket: the watchdog follows the
 * plaintext there, as on a plain connection.
 */
import * as net from "node:net"
import * as tls from "node:tls"

/** The options the driver passes to its `socket` factory (the parts used here). */
export interface DriverSocketOptions {
  readonly host: ReadonlyArray<string>
  readonly port: ReadonlyArray<number>
  readonly path?: string | false
  readonly ssl?: unknown
}

/** How the factory opens connections: the silence bounds, and the TLS the driver was asked for. */
export interface SocketFactoryOptions {
  /** The statement timeout, in ms … */
  readonly queryTimeoutMs: number
  /** … and how much longer a connection that owes an answer may stay silent. */
  readonly graceMs: number
  /**
   * Time to open a TLS connection (TCP, SSLRequest, handshake), in ms: the driver's own connect
   * timeout starts only once it has the socket, and then covers its login.
   */
  readonly connectTimeoutMs: number
  /**
   * The driver's `ssl` setting as it parsed it (from `sslmode` of the URL, or the option):
   * false/undefined: plain; `prefer`: TLS when the server offers it; `require`/`allow`: TLS
   * without checking the certificate; an object: TLS with those `tls.connect` options; any
   * other value (`verify-full`, true): TLS with the certificate checked.
   */
  readonly ssl?: unknown
  /** The driver's `sslnegotiation` (`direct`: TLS from the first byte, PostgreSQL 17+). */
  readonly sslnegotiation?: unknown
}

/** A TLS connection that could not be opened (SQLSTATE 08001: the store reads it as `Unavailable`). */
export class DatabaseTlsFailed extends Error {
  readonly code = "08001"
  constructor(readonly where: string, why: string, override readonly cause?: unknown) {
    super(`could not open a TLS connection to PostgreSQL at ${where}: ${why}`)
  }
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

/** Watches `socket` (plain, or the TLS socket whose plaintext the driver reads and writes) as described above. */
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

/** The `tls.connect` options of the driver's `ssl` setting, as the driver would pass them. */
const tlsOptionsOf = (ssl: unknown, host: string | undefined): tls.ConnectionOptions => ({
  servername: host === undefined || net.isIP(host) ? undefined : host,
  ...(ssl === "require" || ssl === "allow" || ssl === "prefer" ? { rejectUnauthorized: false } : typeof ssl === "object" && ssl !== null ? ssl : {})
})

const SSL_REQUEST_BYTES = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])

/**
 * Opens TLS on the connected-to-be `raw` socket as PostgreSQL wants it; answers the TLS socket
 * (or `raw` itself under `prefer` when the server declines TLS). Fails with DatabaseTlsFailed.
 */
const secure = (raw: net.Socket, where: string, host: string | undefined, options: SocketFactoryOptions): Promise<net.Socket> =>
  new Promise<net.Socket>((resolve, reject) => {
    let settled = false
    const fail = (why: string, cause?: unknown) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      raw.destroy()
      reject(new DatabaseTlsFailed(where, why, cause))
    }
    const done = (socket: net.Socket) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      raw.removeListener("error", onRawError)
      resolve(socket)
    }
    const timer = setTimeout(() => fail(`no TLS connection within ${options.connectTimeoutMs / 1000} s (connect_timeout)`), options.connectTimeoutMs)
    const onRawError = (error: Error) => fail(error.message, error)
    raw.on("error", onRawError)
    raw.once("close", () => fail("the connection closed before TLS was set up"))
    const handshake = () => {
      raw.removeAllListeners("close")
      const direct = options.sslnegotiation === "direct"
      const socket = tls.connect({ socket: raw, ...tlsOptionsOf(options.ssl, host), ...(direct ? { ALPNProtocols: ["postgresql"] } : {}) })
      socket.once("secureConnect", () => {
        socket.removeListener("error", onTlsError)
        done(socket)
      })
      const onTlsError = (error: Error) => fail(error.message, error)
      socket.once("error", onTlsError)
    }
    raw.once("connect", () => {
      if (options.sslnegotiation === "direct") return handshake()
      raw.once("data", (answer: Buffer) => {
        if (answer[0] === 0x53) return handshake()
        if (options.ssl === "prefer") {
          raw.removeAllListeners("close")
          return done(raw)
        }
        fail("the server does not accept TLS (it answered the SSLRequest with N)")
      })
      raw.write(SSL_REQUEST_BYTES)
    })
  })

/**
 * A `socket` option for the driver: connects to its hosts in turn (or its Unix socket), sets up
 * TLS when `options.ssl` asks for it (the driver itself must then be given `ssl: false`), and
 * destroys a connection that owes an answer and stays silent for `queryTimeoutMs` and `graceMs`
 * more (the database's own statement timeout answers first when it can).
 */
export const socketFactory = (factory: SocketFactoryOptions) => {
  const { queryTimeoutMs, graceMs } = factory
  const silenceMs = queryTimeoutMs + graceMs
  const useTls = !(factory.ssl === false || factory.ssl === undefined || factory.ssl === null || factory.ssl === "disable")
  let next = 0
  return (options: DriverSocketOptions): net.Socket | Promise<net.Socket> => {
    if (options.ssl !== false && options.ssl !== undefined && options.ssl !== null) {
      // The driver would wrap the socket in TLS itself, past the watchdog: a setup error.
      throw new Error("the postgres driver must be given ssl: false with this socket factory (it sets up TLS itself)")
    }
    let socket: net.Socket
    let where: string
    let host: string | undefined
    if (typeof options.path === "string" && options.path !== "") {
      socket = net.connect(options.path)
      where = options.path
    } else {
      const i = next++ % Math.max(options.host.length, 1)
      host = options.host[i] ?? "localhost"
      const port = options.port[i] ?? options.port[0] ?? 5432
      socket = net.connect({ host, port })
      Object.assign(socket, { host, port })
      where = `${host}:${port}`
    }
    if (!useTls) {
      watch(socket, where, silenceMs, queryTimeoutMs)
      return socket
    }
    return secure(socket, where, host, factory).then((secured) => {
      if (secured !== socket) Object.assign(secured, { host: (socket as { host?: string }).host, port: (socket as { port?: number }).port })
      watch(secured, where, silenceMs, queryTimeoutMs)
      return secured
    })
  }
}
