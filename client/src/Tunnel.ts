/**
 * One TCP connection carried over the server's attach WebSocket
 * (`GET /api/project/{project}/runs/attach`, subprotocol `dstack-tunnel`): binary messages are
 * bytes, an empty one says its sender has finished writing. Node.js and Deno only (`ws`,
 * node:net); the framing is the server's (core's runner/adapter/nodeTunnel.ts).
 */
import type * as net from "node:net"
import WebSocket from "ws"

export const TUNNEL_PROTOCOL = "dstack-tunnel"

/** Bytes queued on the WebSocket past which reading the local socket pauses. */
const HIGH_WATER = 1 << 20

/** Where a tunnel goes: the server, the user's token, and the run's job port. */
export interface TunnelEndpoint {
  readonly url: string
  readonly token: string
  readonly project: string
  readonly runName: string
  readonly port: number
  readonly jobNum?: number | undefined
  readonly replicaNum?: number | undefined
}

/** The route's URL for an endpoint, `http(s)` or `ws(s)`. */
export const attachUrl = (endpoint: TunnelEndpoint, scheme: "http" | "ws"): string => {
  const base = new URL(endpoint.url)
  const url = new URL(`${base.pathname.replace(/\/$/, "")}/api/project/${encodeURIComponent(endpoint.project)}/runs/attach`, base)
  url.searchParams.set("run_name", endpoint.runName)
  url.searchParams.set("port", String(endpoint.port))
  if (endpoint.jobNum !== undefined) url.searchParams.set("job_num", String(endpoint.jobNum))
  if (endpoint.replicaNum !== undefined) url.searchParams.set("replica_num", String(endpoint.replicaNum))
  if (scheme === "ws") url.protocol = base.protocol === "https:" ? "wss:" : "ws:"
  return url.toString()
}

/** The server's refusal of a tunnel: its status and message (`retryable` for 409 and 5xx). */
export class TunnelRefused extends Error {
  constructor(readonly status: number, message: string) {
    super(message)
  }
  get retryable(): boolean {
    return this.status === 409 || this.status >= 500
  }
}

/** The message of an error body of the API (`{"detail": [{"msg"}]}`), else the text itself. */
export const errorMessage = (status: number, text: string): string => {
  try {
    const detail = (JSON.parse(text) as { detail?: ReadonlyArray<{ msg?: string }> }).detail
    if (Array.isArray(detail) && detail.length > 0) return detail.map((d) => d.msg ?? "").join("; ")
  } catch {
    // not JSON: the text as it is
  }
  return text.trim() === "" ? `the server answered ${status}` : text.trim()
}

/**
 * Opens the WebSocket; rejects with TunnelRefused (an HTTP answer) or the connection's error.
 * The socket comes paused: bytes the job sends at once (a server that speaks first) may arrive
 * with the handshake's answer, and are kept until `bridge` takes them (it resumes the socket).
 */
export const openTunnel = (endpoint: TunnelEndpoint): Promise<WebSocket> =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(attachUrl(endpoint, "ws"), [TUNNEL_PROTOCOL], {
      headers: { authorization: `Bearer ${endpoint.token}` },
      perMessageDeflate: false
    })
    ws.once("open", () => {
      ws.pause()
      resolve(ws)
    })
    ws.once("unexpected-response", (_req, res) => {
      let text = ""
      res.setEncoding("utf8")
      res.on("data", (d: string) => (text += d))
      res.on("end", () => reject(new TunnelRefused(res.statusCode ?? 0, errorMessage(res.statusCode ?? 0, text))))
      res.on("error", () => reject(new TunnelRefused(res.statusCode ?? 0, `the server answered ${res.statusCode}`)))
    })
    ws.once("error", reject)
  })

/** Carries `socket` over `ws` until either closes; `onEnd` is called once. */
export const bridge = (ws: WebSocket, socket: net.Socket, onEnd: () => void): void => {
  let ended = false
  const end = (failed: boolean) => {
    if (ended) return
    ended = true
    // A tunnel that closed in order still delivers what it carried: the socket ends once its
    // writes are out (as a TCP peer closing would); a failed one is cut.
    if (failed) socket.destroy()
    else socket.destroySoon()
    if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(failed ? 1011 : 1000)
    onEnd()
  }
  socket.setNoDelay(true)
  let paused = false
  const send = (chunk: Buffer) => {
    ws.send(chunk, { binary: true }, () => {
      if (paused && ws.bufferedAmount < HIGH_WATER / 2) {
        paused = false
        socket.resume()
      }
    })
    if (ws.bufferedAmount > HIGH_WATER) {
      paused = true
      socket.pause()
    }
  }
  socket.on("data", (chunk: Buffer) => {
    if (ws.readyState === WebSocket.OPEN) send(chunk)
  })
  socket.on("end", () => {
    if (ws.readyState === WebSocket.OPEN) ws.send(Buffer.alloc(0), { binary: true })
  })
  socket.on("error", () => end(true))
  socket.on("close", () => end(false))
  ws.on("message", (data: Buffer | ArrayBuffer | Array<Buffer>) => {
    const chunk = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
    if (chunk.length === 0) {
      socket.end()
      return
    }
    if (!socket.write(chunk)) {
      ws.pause()
      socket.once("drain", () => ws.resume())
    }
  })
  ws.on("error", () => end(true))
  ws.on("close", () => end(false))
  ws.resume()
}
