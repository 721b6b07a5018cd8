/**
 * The `local` runner transport: the runner is on this machine, so the server reaches it over
 * loopback with plain fetch, and a job's ports are already reachable on 127.0.0.1. A forward
 * to another local port is a real TCP proxy that lives as long as its scope.
 */
import { RunnerTransport, type TransportFactory } from "@dstack-ts/core"
import { Effect, ParseResult, Schema } from "effect"
import { openTcpForward } from "./internal/TcpForward.ts"

const NAME = "local"
const MODULE = "LocalTransport"

const LOOPBACK_NAMES = new Set(["localhost", "::1", "[::1]"])

/** True for a host name that means this machine: `localhost`, `127.x.x.x`, `::1`. */
export const isLoopback = (hostname: string): boolean =>
  LOOPBACK_NAMES.has(hostname.toLowerCase()) || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname)

const urlHost = (hostname: string) => (hostname.includes(":") && !hostname.startsWith("[") ? `[${hostname}]` : hostname)
const dialHost = (hostname: string) => hostname.replace(/^\[(.*)\]$/, "$1")

const fail = (method: string, reason: RunnerTransport.RunnerTransportErrorReason, message: string, cause?: unknown) =>
  RunnerTransport.fail(MODULE, method, reason, message, cause)

const checkTarget = (method: string, target: RunnerTransport.RunnerTarget) =>
  target.hostname === ""
    ? fail(method, "Invalid", "the instance has no host name yet")
    : isLoopback(target.hostname)
    ? Effect.void
    : fail(
      method,
      "Invalid",
      `the local transport only reaches runners on this machine, not on ${target.hostname}; use a tunnelling transport (ssh) for other hosts`
    )

/** `min` 0 where 0 means "any free port" (a local port to listen on), 1 for a port to reach. */
const checkPort = (method: string, name: string, port: number, min: 0 | 1 = 1) =>
  Number.isInteger(port) && port >= min && port <= 65535
    ? Effect.void
    : fail(method, "Invalid", `${name} must be ${min}..65535, got ${port}`)

const listenError = (localPort: number, remote: string, cause: unknown) => {
  const code = (cause as { code?: string } | undefined)?.code
  const reason: RunnerTransport.RunnerTransportErrorReason = code === "EACCES"
    ? "PermissionDenied"
    : code === "EADDRINUSE"
    ? "Invalid"
    : "Unknown"
  const why = code === "EADDRINUSE" ? "it is already in use" : code === "EACCES" ? "permission denied" : String(cause)
  return new RunnerTransport.RunnerTransportError({
    module: MODULE,
    method: "forward",
    reason,
    message: `cannot forward 127.0.0.1:${localPort} to ${remote}: ${why}`,
    cause
  })
}

/**
 * The local transport.
 *
 * @example
 * const client = yield* LocalTransport.transport.connect({ hostname: "127.0.0.1", runnerPort: 41234 })
 * const res = yield* client.fetch("/api/healthcheck")
 */
export const transport: RunnerTransport.RunnerTransport = {
  name: NAME,
  connect: (target) =>
    Effect.zipRight(
      Effect.zipRight(checkTarget("connect", target), checkPort("connect", "the runner port", target.runnerPort)),
      Effect.succeed(RunnerTransport.fetchClient(MODULE, `http://${urlHost(target.hostname)}:${target.runnerPort}`))
    ),
  forward: (target, localPort, remotePort) =>
    Effect.gen(function*() {
      yield* checkTarget("forward", target)
      yield* checkPort("forward", "the local port", localPort, 0)
      yield* checkPort("forward", "the remote port", remotePort)
      if (remotePort === 0) return yield* fail("forward", "Invalid", "the remote port must be a port number, not 0")
      // Already reachable where it is: nothing to open.
      if (localPort === 0 || localPort === remotePort) {
        return { localHost: "127.0.0.1", localPort: remotePort, remotePort }
      }
      const host = dialHost(target.hostname)
      const forward = yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: () => openTcpForward(localPort, host, remotePort),
          catch: (cause) => listenError(localPort, `${target.hostname}:${remotePort}`, cause)
        }),
        (f) => Effect.promise(() => f.close())
      )
      return { localHost: "127.0.0.1", localPort: forward.localPort, remotePort }
    })
}

/** The transport's configuration section: it has no options, so any key is a mistake. */
export const LocalTransportConfig = Schema.Record({ key: Schema.String, value: Schema.Unknown }).pipe(
  Schema.filter((section) => {
    const keys = Object.keys(section).filter((key) => key !== "type")
    return keys.length === 0 || `the local transport has no options; unexpected ${keys.map((k) => JSON.stringify(k)).join(", ")}`
  })
)

const decodeConfig = Schema.decodeUnknown(LocalTransportConfig, { errors: "all" })

/** The plugin's factory: the section may be empty (or `{ type: "local" }`); anything else is `Invalid`. */
export const fromConfig: TransportFactory = (config) =>
  decodeConfig(config ?? {}).pipe(
    Effect.mapError((error) =>
      new RunnerTransport.RunnerTransportError({
        module: MODULE,
        method: "fromConfig",
        reason: "Invalid",
        message: `invalid local transport configuration:\n${ParseResult.TreeFormatter.formatErrorSync(error)}`,
        cause: error
      })
    ),
    Effect.as(transport)
  )
