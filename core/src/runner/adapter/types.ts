/**
 * What a runtime adapter provides to serve the runner: listen on a host and port (0 picks a
 * free one) and report the port it bound. Each runtime has a module with the same export.
 */

import type { Duplex } from "node:stream"

/** A fetch handler, as Hono's `app.fetch`; `env` carries what the runtime knows of the connection (`remoteAddr` on Deno). */
export type FetchHandler = (request: Request, env?: any) => Response | Promise<Response>

/** A listening HTTP server. */
export interface ListeningServer {
  readonly hostname: string
  /** The port actually bound (the chosen one when 0 was asked for). */
  readonly port: number
  /** Stops accepting connections and closes the open ones (live streams included). */
  readonly close: () => Promise<void>
}

/**
 * Where an upgraded connection (a WebSocket) goes: the address to dial and the request path
 * and headers to send there. The adapter carries the bytes (Node) or the messages (Deno) both
 * ways until either side closes, then calls `done`.
 */
export interface UpgradeTarget {
  readonly host: string
  readonly port: number
  /** The path with its query, as the upstream server is to see it. */
  readonly path: string
  /** The request headers to send upstream (hop-by-hop ones already removed, `host` set). */
  readonly headers: Readonly<Record<string, string>>
  /** Called once when the upgraded connection ends (either side), or could not be made. */
  readonly done: (failed: boolean) => void
}

/**
 * A WebSocket the server accepts itself and carries to a TCP port (`dstack attach`): each
 * binary message is bytes for `host:port`, each chunk read there goes back as one; an empty
 * binary message says that its sender has finished writing (a half-close), so a client that
 * ends its request still reads the whole answer. Either side closing closes the other.
 */
export interface TunnelTarget {
  readonly kind: "tcp"
  readonly host: string
  readonly port: number
  /**
   * Optional: opens the connection to `host:port` some other way than TCP (the runner
   * transport's own channel, `ForwardedPort.connect`), as a Node.js stream. Used by the Node.js
   * adapter; the Deno adapter connects to `host:port`.
   */
  readonly connect?: () => Promise<Duplex>
  /** The subprotocol to accept (the client asked for it). */
  readonly protocol: string
  /** Called once when the tunnel ends (either side), or could not be made. */
  readonly done: (failed: boolean) => void
}

/**
 * A WebSocket the server accepts itself (no subprotocol) and writes to: each chunk `messages`
 * yields goes as one binary message; when it ends the socket is closed normally (1000), when it
 * throws with 1011. The client going away aborts `signal`; messages it sends are ignored.
 */
export interface MessagesTarget {
  readonly kind: "messages"
  readonly messages: (signal: AbortSignal) => AsyncIterable<Uint8Array>
}

/** The accepted WebSocket of a `SocketTarget`, as its handler writes to it. */
export interface SocketPeer {
  /** A binary message (bytes) or a text message (a string). */
  readonly send: (data: Uint8Array | string) => void
  readonly close: (code: number, reason?: string) => void
}

/** What a `SocketTarget` does with what the client sends, and with the socket's end. */
export interface SocketHandlers {
  readonly message: (data: Uint8Array | string) => void
  /** Called once, when the socket has closed (either side). */
  readonly closed: () => void
}

/**
 * A WebSocket the server accepts itself (no subprotocol) and talks over both ways (the
 * runner's `/api/exec`): `open` is called once the socket is open.
 */
export interface SocketTarget {
  readonly kind: "socket"
  readonly open: (peer: SocketPeer) => SocketHandlers
}

type AnyTarget = UpgradeTarget | TunnelTarget | MessagesTarget | SocketTarget

/**
 * Answers a request that asks to upgrade its connection (`Upgrade: websocket`): a `Response`
 * to send instead (401, 404, 429, 503 …), or where to carry the connection to. `clientIp` is the
 * address the connection comes from, where the runtime says it.
 */
export type UpgradeHandler = (request: Request, clientIp?: string) => Promise<Response | AnyTarget>

export const isTunnelTarget = (target: AnyTarget): target is TunnelTarget => "kind" in target && target.kind === "tcp"
export const isMessagesTarget = (target: AnyTarget): target is MessagesTarget => "kind" in target && target.kind === "messages"
export const isSocketTarget = (target: AnyTarget): target is SocketTarget => "kind" in target && target.kind === "socket"

/** Starts an HTTP server for `fetch` on one runtime. */
export type ServeFunction = (
  fetch: FetchHandler,
  options: { readonly hostname: string; readonly port: number; readonly upgrade?: UpgradeHandler | undefined }
) => Promise<ListeningServer>
