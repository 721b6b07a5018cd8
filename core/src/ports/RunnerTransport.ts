/**
 * The RunnerTransport port: how the server reaches the runner of an instance. Upstream the
 * runner port is never public and the server goes through SSH tunnels; a transport hands out a
 * runner client (a base URL and a fetch) and forwards ports, both for the life of a scope.
 */
import type { Duplex } from "node:stream"
import { Context, Effect, Schema, type Scope } from "effect"

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
 * - `PermissionDenied`: the host refused the key or user, or presented a host key other than the recorded one.
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
  /** How to log in over SSH (SSH fleet hosts): the key and, when the host is behind one, the jump host. */
  readonly ssh?: SshAccess
}

/** Credentials for reaching a host over SSH; kept in the server's records, never in API answers. */
export interface SshAccess {
  readonly user: string
  /** The SSH port (default 22). */
  readonly port?: number
  /** The private key (OpenSSH or PEM text). */
  readonly privateKey: string
  /** The host's recorded public key (an OpenSSH public key line): a host presenting another one is refused. */
  readonly hostKey?: string
  /** A host to go through first (`proxy_jump`), with its own credentials. */
  readonly proxyJump?: SshAccess & { readonly hostname: string }
}

/**
 * A connection to one runner, valid for the scope it was opened in. Once that scope has
 * closed the client must not be used: a request then either still works (a transport with
 * nothing to close) or fails with `Transport`; it never hangs.
 */
export interface RunnerClient {
  /** The base URL requests go to, e.g. `http://127.0.0.1:41234`. */
  readonly baseUrl: string
  /**
   * `fetch` of `path` (with its query) against `baseUrl`. Bodies go both ways byte for byte;
   * headers go both ways; every status the runner answers (404, 409, 500 …) is a `Response`,
   * not an error; a response body streams as the runner writes it (logs are followed that
   * way), never buffered whole. A failure to connect is a `Transport` error. Interrupting the
   * effect aborts the request at the runner, also when `init.signal` is given.
   */
  readonly fetch: (path: string, init?: RequestInit) => Effect.Effect<Response, RunnerTransportError>
}

/** A forwarded port: connect to `localHost:localPort` to reach `remotePort` on the instance. */
export interface ForwardedPort {
  readonly localHost: string
  readonly localPort: number
  readonly remotePort: number
  /**
   * Optional: one connection to `remotePort` for a caller in this process, without the local
   * listener (a transport that carries each connection on a channel of its own, as SSH does):
   * a Node.js stream with half-close kept (`end()` ends the sending side; `end` is the remote's
   * end). It saves a pass of every byte through the loopback. Rejects as a connection to
   * `localPort` would fail; closing the forward's scope cuts it.
   */
  readonly connect?: () => Promise<Duplex>
  /**
   * Optional: the local listener accepts a connection before the far side is reached, and closes
   * it when the far side refuses (a port-forward that learns of a refusal only later, as the
   * Kubernetes API's does). Whether something listens at `remotePort` is then told only by an
   * answer over the connection. Absent: a connection is refused as the far side refuses it.
   */
  readonly relayed?: boolean
}

// ---------------------------------------------------------------------------------------------
// The port

export interface RunnerTransport {
  /** The transport's name, e.g. `ssh`, `local`. */
  readonly name: string
  /**
   * Opens a connection (a tunnel, if the transport needs one) to the runner of a target. A
   * target it cannot serve (no host name yet, a runner port outside 1..65535, a host it does
   * not reach) fails here with `Invalid`; a runner that does not answer fails with `Transport`
   * here or at the first request, in bounded time.
   */
  readonly connect: (target: RunnerTarget) => Effect.Effect<RunnerClient, RunnerTransportError, Scope.Scope>
  /**
   * Forwards a local port to a port of the instance until the scope closes. `localPort` 0 asks
   * for any free port; the answer says which. Connections through the forward carry bytes both
   * ways, many at once, and honour a half-close (a client that ends its side still reads the
   * whole answer); a tunnel whose protocol cannot carry a half-close (the Kubernetes API's
   * port-forward) ends the connection when the client ends its side, and its conformance suite
   * says so (`halfClose: false`). Closing the scope stops the listener and cuts the connections still open
   * through it; a later connection is refused.
   *
   * A transport with no tunnel may answer the remote port itself where it is reachable as it
   * is (`localPort` 0 or equal to `remotePort`): nothing is opened, so the scope closes
   * nothing. A local port it cannot listen on (in use) is `Invalid`, naming the port; ports
   * outside 0..65535 (local) or 1..65535 (remote) and a target with no host name are `Invalid`.
   * Nothing needs to listen on `remotePort` yet (a job's service starts later): the forward
   * opens anyway, and a connection through it while nothing listens there is refused or
   * closed without data, leaving the forward serving.
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
/**
 * What a failed fetch says, with the reason beneath it: `fetch failed` alone does not tell a
 * refused connection from a reset or an answer that is not HTTP.
 */
const fetchFailure = (cause: unknown): string => {
  if (!(cause instanceof Error)) return String(cause)
  const inner = (cause as { cause?: unknown }).cause
  if (inner === undefined || inner === null) return cause.message
  const text = inner instanceof Error ? inner.message || (inner as { code?: string }).code || inner.name : String(inner)
  return text === "" || text === cause.message ? cause.message : `${cause.message} (${text.slice(0, 300)})`
}

export const fetchClient = (module: string, baseUrl: string): RunnerClient => ({
  baseUrl,
  fetch: (path, init) =>
    Effect.tryPromise({
      // Interruption aborts the request even when the caller passed a signal of its own.
      try: (signal) =>
        globalThis.fetch(new URL(path, baseUrl), {
          ...init,
          signal: init?.signal ? AbortSignal.any([init.signal, signal]) : signal
        }),
      catch: (cause) =>
        new RunnerTransportError({
          module,
          method: "fetch",
          reason: "Transport",
          message: `cannot reach the runner at ${baseUrl}: ${fetchFailure(cause)}`,
          cause
        })
    })
})
