/**
 * The `ssh` runner transport: reaches a runner that listens on its host's loopback through an
 * SSH tunnel (upstream's way: the runner port is never public), logging in with the target's
 * key (`RunnerTarget.ssh`), through its jump host when it has one. Connections are shared per
 * host, kept alive, and reopened with backoff when they drop; job ports are forwarded the same
 * way. Failures name the hop: the jump host, or the host behind it. A target's recorded host
 * key (`ssh.hostKey`) is required of the host; a host presenting another is refused.
 */
import { RunnerTransport, type TransportFactory, configDecoder } from "@dstack-ts/core"
import { Effect, Schema, type Scope } from "effect"
import { describeHop, HopFailure, type HostAccess, openTunnel, SshPool } from "@dstack-ts/ssh"

const NAME = "ssh"
const MODULE = "SshTransport"

/** Options of the SSH transport (camelCase; the configuration uses snake_case keys). */
export interface SshTransportOptions {
  /** Time for TCP connect, handshake and login, per hop. Default 10 s. */
  readonly connectTimeoutSeconds?: number
  /** A keep-alive probe every this many seconds (0: none). Default 15 s. */
  readonly keepaliveIntervalSeconds?: number
  /** Unanswered keep-alive probes before the connection counts as dead. Default 3. */
  readonly keepaliveCountMax?: number
  /** Tries to (re)open a connection to an unreachable host, the first included. Default 4. */
  readonly reconnectAttempts?: number
  /** The first backoff delay between those tries, doubling up to 5 s. Default 0.25 s. */
  readonly reconnectBackoffSeconds?: number
  /** How long a connection nobody uses stays open for the next request. Default 60 s. */
  readonly idleCloseSeconds?: number
}

/** The configuration section (`transports: { ssh: {...} }`), snake_case as upstream writes YAML. */
export const SshTransportConfig = Schema.Struct({
  type: Schema.optional(Schema.Literal(NAME)),
  connectTimeoutSeconds: Schema.optional(Schema.Number.pipe(Schema.positive())).pipe(Schema.fromKey("connect_timeout_seconds")),
  keepaliveIntervalSeconds: Schema.optional(Schema.Number.pipe(Schema.nonNegative())).pipe(
    Schema.fromKey("keepalive_interval_seconds")
  ),
  keepaliveCountMax: Schema.optional(Schema.Int.pipe(Schema.positive())).pipe(Schema.fromKey("keepalive_count_max")),
  reconnectAttempts: Schema.optional(Schema.Int.pipe(Schema.positive())).pipe(Schema.fromKey("reconnect_attempts")),
  reconnectBackoffSeconds: Schema.optional(Schema.Number.pipe(Schema.nonNegative())).pipe(
    Schema.fromKey("reconnect_backoff_seconds")
  ),
  idleCloseSeconds: Schema.optional(Schema.Number.pipe(Schema.nonNegative())).pipe(Schema.fromKey("idle_close_seconds"))
}).annotations({ identifier: "SshTransportConfig" })

const fail = (method: string, reason: RunnerTransport.RunnerTransportErrorReason, message: string, cause?: unknown) =>
  RunnerTransport.fail(MODULE, method, reason, message, cause)

const isPort = (port: number, min: number) => Number.isInteger(port) && port >= min && port <= 65535

/** The SSH login of a target: its `ssh` access, for the host it names. */
const accessOf = (method: string, target: RunnerTransport.RunnerTarget) =>
  target.hostname === ""
    ? fail(method, "Invalid", "the instance has no host name yet")
    : target.ssh === undefined
    ? fail(method, "Invalid", `the instance ${target.instanceId ?? target.hostname} has no SSH access (no user and key to log in with)`)
    : Effect.succeed<HostAccess>({
      hostname: target.hostname,
      port: target.ssh.port ?? target.sshPort ?? 22,
      user: target.ssh.user,
      privateKey: target.ssh.privateKey,
      ...(target.ssh.hostKey === undefined ? {} : { hostKey: target.ssh.hostKey }),
      ...(target.ssh.proxyJump === undefined ? {} : {
        proxyJump: {
          hostname: target.ssh.proxyJump.hostname,
          port: target.ssh.proxyJump.port ?? 22,
          user: target.ssh.proxyJump.user,
          privateKey: target.ssh.proxyJump.privateKey,
          ...(target.ssh.proxyJump.hostKey === undefined ? {} : { hostKey: target.ssh.proxyJump.hostKey })
        }
      })
    })

/**
 * A session failure as the port's error: refused logins and changed host keys are
 * `PermissionDenied` (trying again cannot pass), the rest `Transport`.
 */
const sessionError = (method: string, error: unknown) => {
  if (error instanceof HopFailure) {
    const reason: RunnerTransport.RunnerTransportErrorReason = error.kind === "auth" || error.kind === "hostkey"
      ? "PermissionDenied"
      : error.kind === "timeout"
      ? "Timeout"
      : error.kind === "key"
      ? "Invalid"
      : "Transport"
    const message = error.kind === "hostkey"
      ? `${error.message}; if its key was replaced on purpose, remove the host from its fleet and add it again`
      : error.message
    return new RunnerTransport.RunnerTransportError({ module: MODULE, method, reason, message, cause: error })
  }
  return new RunnerTransport.RunnerTransportError({
    module: MODULE,
    method,
    reason: "Transport",
    message: error instanceof Error ? error.message : String(error),
    cause: error
  })
}

const listenError = (localPort: number, remote: string, cause: unknown) => {
  const code = (cause as { code?: string } | undefined)?.code
  return new RunnerTransport.RunnerTransportError({
    module: MODULE,
    method: "forward",
    reason: code === "EACCES" ? "PermissionDenied" : code === "EADDRINUSE" ? "Invalid" : "Unknown",
    message: `cannot forward 127.0.0.1:${localPort} to ${remote}: ${
      code === "EADDRINUSE" ? `local port ${localPort} is already in use` : code === "EACCES" ? "permission denied" : String(cause)
    }`,
    cause
  })
}

/** The SSH transport and the pool it owns (closed with the scope it was made in). */
export interface SshTransport extends RunnerTransport.RunnerTransport {
  /** Drops every open SSH connection (the next request reconnects): for tests of reconnection. */
  readonly dropConnections: () => void
}

/**
 * Makes the SSH transport; its connections close with the scope.
 *
 * @example
 * const ssh = yield* SshTransport.make({ keepaliveIntervalSeconds: 10 })
 * const client = yield* ssh.connect({ hostname: "10.0.0.2", runnerPort: 10999, ssh: { user: "root", privateKey } })
 * const res = yield* client.fetch("/api/healthcheck")
 */
export const make = (options: SshTransportOptions = {}): Effect.Effect<SshTransport, never, Scope.Scope> =>
  Effect.gen(function*() {
    const pool = new SshPool({
      readyTimeoutMs: (options.connectTimeoutSeconds ?? 10) * 1000,
      keepaliveIntervalMs: (options.keepaliveIntervalSeconds ?? 15) * 1000,
      keepaliveCountMax: options.keepaliveCountMax ?? 3,
      reconnectAttempts: options.reconnectAttempts ?? 4,
      backoffMs: (options.reconnectBackoffSeconds ?? 0.25) * 1000,
      maxBackoffMs: 5000,
      idleCloseMs: (options.idleCloseSeconds ?? 60) * 1000
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => pool.closeAll()))

    /** Holds the host's session for the scope and opens it now, so a refused login fails here. */
    const holdSession = (method: string, access: HostAccess) =>
      Effect.acquireRelease(Effect.sync(() => pool.hold(access)), (release) => Effect.sync(release)).pipe(
        Effect.zipRight(Effect.tryPromise({ try: () => pool.session(access), catch: (error) => sessionError(method, error) }))
      )

    const tunnel = (method: string, access: HostAccess, localPort: number, remotePort: number) =>
      Effect.acquireRelease(
        Effect.tryPromise({
          try: () =>
            openTunnel({
              localHost: "127.0.0.1",
              localPort,
              remoteHost: "127.0.0.1",
              remotePort,
              session: () => pool.session(access)
            }),
          catch: (cause) => listenError(localPort, `${describeHop(access)} port ${remotePort}`, cause)
        }),
        (t) => Effect.promise(() => t.close())
      ).pipe(Effect.mapError((e) => (e.method === method ? e : new RunnerTransport.RunnerTransportError({ ...e, method }))))

    const transport: SshTransport = {
      name: NAME,
      connect: (target) =>
        Effect.gen(function*() {
          const access = yield* accessOf("connect", target)
          if (!isPort(target.runnerPort, 1)) {
            return yield* fail("connect", "Invalid", `the runner port must be 1..65535, got ${target.runnerPort}`)
          }
          yield* holdSession("connect", access)
          const t = yield* tunnel("connect", access, 0, target.runnerPort)
          const client = RunnerTransport.fetchClient(MODULE, `http://127.0.0.1:${t.localPort}`)
          return {
            baseUrl: client.baseUrl,
            fetch: (path, init) =>
              Effect.mapError(client.fetch(path, init), (error) =>
                new RunnerTransport.RunnerTransportError({
                  ...error,
                  message: `cannot reach the runner at port ${target.runnerPort} of ${describeHop(access)} through SSH: ${
                    t.lastError() ?? error.message
                  }`
                }))
          }
        }),
      forward: (target, localPort, remotePort) =>
        Effect.gen(function*() {
          const access = yield* accessOf("forward", target)
          if (!isPort(remotePort, 1)) return yield* fail("forward", "Invalid", `the remote port must be 1..65535, got ${remotePort}`)
          if (!isPort(localPort, 0)) return yield* fail("forward", "Invalid", `the local port must be 0..65535, got ${localPort}`)
          yield* holdSession("forward", access)
          const t = yield* tunnel("forward", access, localPort, remotePort)
          return { localHost: "127.0.0.1", localPort: t.localPort, remotePort, connect: t.connect }
        }),
      dropConnections: () => pool.dropSessions()
    }
    return transport
  })

const decodeConfig = configDecoder(SshTransportConfig, "ssh transport configuration")

/** The plugin's factory: the configuration section (all keys optional) to a transport. */
export const fromConfig: TransportFactory = (config) =>
  decodeConfig(config).pipe(
    Effect.mapError((error) =>
      new RunnerTransport.RunnerTransportError({
        module: MODULE,
        method: "fromConfig",
        reason: "Invalid",
        message: error.message,
        cause: error.cause
      })
    ),
    Effect.flatMap(({ type: _type, ...options }) => make(options))
  )
