/**
 * The RunnerTransport port: how the server reaches the runner of an instance. Upstream the
 * runner port is never public and the server goes through SSH tunnels; a transport hands out a
 * runner client (a base URL and a fetch) and forwards ports, both for the life of a scope.
 */
import { Context, Effect, Layer, Schema, type Scope } from "effect"

// ---------------------------------------------------------------------------------------------
// Errors

export const RunnerTransportErrorReason = Schema.Literal(
  "NotFound",
  "PermissionDenied",
  "Transport",
  "Invalid",
  "Timeout",
  "Unknown"
)
export type RunnerTransportErrorReason = typeof RunnerTransportErrorReason.Type

/**
 * The one error of the RunnerTransport port.
 * - `PermissionDenied`: the host refused the key or user.
 * - `Transport`: the host or the runner could not be reached (not up yet, network); retryable.
 * - `Invalid`: a target the transport cannot serve (no host name yet, a port it cannot forward).
 */
export class RunnerTransportError extends Schema.TaggedError<RunnerTransportError>(
  "@dstack-ts/core/RunnerTransport/RunnerTransportError"
)("RunnerTransportError", {
  module: Schema.String,
  method: Schema.String,
  reason: RunnerTransportErrorReason,
  message: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Defect)
}) {
  get isRetryable(): boolean {
    return isRetryable(this)
  }
}

export const isRetryable = (error: RunnerTransportError): boolean =>
  error.reason === "Transport" || error.reason === "Timeout"

export const fail = (
  module: string,
  method: string,
  reason: RunnerTransportErrorReason,
  message: string,
  cause?: unknown
): Effect.Effect<never, RunnerTransportError> =>
  Effect.fail(new RunnerTransportError({ module, method, reason, message, ...(cause === undefined ? {} : { cause }) }))

// ---------------------------------------------------------------------------------------------
// Data

/** Where a runner lives: from the instance's provisioning data. */
export interface RunnerTarget {
  /** The host as the server sees it (address or DNS name). */
  readonly hostname: string
  /** The runner's port on the host (upstream default 10999). */
  readonly runnerPort: number
  readonly sshPort?: number
  readonly username?: string
  /** The backend's id of the instance, for messages and connection reuse. */
  readonly instanceId?: string
}

/** A connection to one runner, valid for the scope it was opened in. */
export interface RunnerClient {
  /** The base URL requests go to, e.g. `http://127.0.0.1:41234`. */
  readonly baseUrl: string
  /** `fetch` against `baseUrl`; a failure to connect is a `Transport` error. */
  readonly fetch: (path: string, init?: RequestInit) => Effect.Effect<Response, RunnerTransportError>
}

/** A forwarded port: connect to `localHost:localPort` to reach `remotePort` on the instance. */
export interface ForwardedPort {
  readonly localHost: string
  readonly localPort: number
  readonly remotePort: number
}

// ---------------------------------------------------------------------------------------------
// The port

export interface RunnerTransport {
  /** The transport's name, e.g. `ssh`, `local`. */
  readonly name: string
  /** Opens a connection (a tunnel, if the transport needs one) to the runner of a target. */
  readonly connect: (target: RunnerTarget) => Effect.Effect<RunnerClient, RunnerTransportError, Scope.Scope>
  /**
   * Forwards a local port to a port of the instance until the scope closes. `localPort` 0 asks
   * for any free port; the answer says which.
   */
  readonly forward: (
    target: RunnerTarget,
    localPort: number,
    remotePort: number
  ) => Effect.Effect<ForwardedPort, RunnerTransportError, Scope.Scope>
}

export const RunnerTransport: Context.Tag<RunnerTransport, RunnerTransport> = Context.GenericTag<RunnerTransport>(
  "@dstack-ts/core/RunnerTransport"
)

/** A runner client over plain `fetch` to `baseUrl`, mapping connection failures to `Transport`. */
export const fetchClient = (module: string, baseUrl: string): RunnerClient => ({
  baseUrl,
  fetch: (path, init) =>
    Effect.tryPromise({
      try: (signal) => globalThis.fetch(new URL(path, baseUrl), { ...init, signal: init?.signal ?? signal }),
      catch: (cause) =>
        new RunnerTransportError({
          module,
          method: "fetch",
          reason: "Transport",
          message: `cannot reach the runner at ${baseUrl}: ${cause instanceof Error ? cause.message : String(cause)}`,
          cause
        })
    })
})

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"])

/**
 * A transport with no tunnel: the server dials `hostname:runnerPort` directly. Right for a
 * runner on this machine and for tests; it cannot forward ports, so `forward` only answers for
 * a loopback target when the local and remote ports coincide (or local is 0).
 */
export const direct: RunnerTransport = {
  name: "direct",
  connect: (target) =>
    target.hostname === ""
      ? fail("direct", "connect", "Invalid", "the instance has no host name yet")
      : Effect.succeed(fetchClient("direct", `http://${target.hostname.includes(":") && !target.hostname.startsWith("[") ? `[${target.hostname}]` : target.hostname}:${target.runnerPort}`)),
  forward: (target, localPort, remotePort) =>
    LOOPBACK.has(target.hostname) && (localPort === 0 || localPort === remotePort)
      ? Effect.succeed({ localHost: target.hostname, localPort: remotePort, remotePort })
      : fail(
        "direct",
        "forward",
        "Invalid",
        `the direct transport cannot forward local port ${localPort} to ${target.hostname}:${remotePort}; use a tunnelling transport (ssh)`
      )
}

/** The direct transport as the `RunnerTransport` service. */
export const layerDirect: Layer.Layer<RunnerTransport> = Layer.succeed(RunnerTransport, direct)
