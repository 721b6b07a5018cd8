/**
 * Serving on Deno through Deno.serve; an upgrade request (a WebSocket) goes to the `upgrade`
 * handler, and a connection it accepts is relayed message by message to its target.
 */
import { acceptMessages, acceptSocket, acceptTunnel } from "./denoTunnel.ts"
import { isMessagesTarget, isSocketTarget, isTunnelTarget, type ServeFunction, type UpgradeHandler } from "./types.ts"

interface DenoHttpServer {
  readonly finished: Promise<void>
  shutdown(): Promise<void>
}
interface DenoServe {
  serve(
    options: {
      hostname: string
      port: number
      onListen?: (addr: { hostname: string; port: number }) => void
      onError?: (error: unknown) => Response
      signal?: AbortSignal
    },
    handler: (request: Request, info: { remoteAddr?: { hostname?: string } }) => Response | Promise<Response>
  ): DenoHttpServer
  upgradeWebSocket(request: Request, options?: { protocol?: string }): { socket: WebSocket; response: Response }
}

const isWebSocketUpgrade = (request: Request): boolean =>
  (request.headers.get("upgrade") ?? "").toLowerCase() === "websocket"

/** Relays a WebSocket between the client and the target, message by message, closing each side with the other. */
const relay = async (deno: DenoServe, request: Request, upgrade: UpgradeHandler, clientIp: string | undefined): Promise<Response> => {
  const result = await upgrade(request, clientIp)
  if (result instanceof Response) return result
  if (isTunnelTarget(result)) return acceptTunnel(request, result)
  if (isMessagesTarget(result)) return acceptMessages(request, result)
  if (isSocketTarget(result)) return acceptSocket(request, result)
  const protocols = (request.headers.get("sec-websocket-protocol") ?? "").split(",").map((p) => p.trim()).filter((p) => p !== "")
  const upstream = new WebSocket(`ws://${result.host.includes(":") ? `[${result.host}]` : result.host}:${result.port}${result.path}`, protocols)
  upstream.binaryType = "arraybuffer"
  const opened = await new Promise<boolean>((resolve) => {
    upstream.onopen = () => resolve(true)
    upstream.onerror = () => resolve(false)
  })
  if (!opened) {
    result.done(true)
    return new Response("cannot reach the service replica", { status: 502 })
  }
  const { socket, response } = deno.upgradeWebSocket(request, upstream.protocol ? { protocol: upstream.protocol } : {})
  socket.binaryType = "arraybuffer"
  const pending: Array<string | ArrayBuffer> = []
  let ended = false
  const end = () => {
    if (ended) return
    ended = true
    result.done(false)
    if (socket.readyState <= 1) socket.close()
    if (upstream.readyState <= 1) upstream.close()
  }
  socket.onopen = () => {
    for (const m of pending.splice(0)) socket.send(m)
  }
  upstream.onmessage = (e) => (socket.readyState === 1 ? socket.send(e.data) : pending.push(e.data))
  socket.onmessage = (e) => upstream.send(e.data)
  upstream.onclose = end
  socket.onclose = end
  upstream.onerror = end
  socket.onerror = end
  return response
}

/**
 * The answer to a request whose handling threw. Deno's own fallback for this case (its default
 * `onError`) was seen to fail inside Deno under load, surfacing as an unhandled rejection in the
 * server's process; answering here keeps every failure a plain 500 and says what failed.
 */
const failed = (request: Request | undefined, error: unknown): Response => {
  const what = request === undefined ? "a request" : `${request.method} ${new URL(request.url).pathname}`
  console.error(`dstack-ts: ${what} failed before it was answered:`, error)
  return new Response("Internal Server Error", { status: 500, headers: { "content-type": "text/plain" } })
}

export const serve: ServeFunction = (fetch, options) => {
  const deno = (globalThis as unknown as { Deno: DenoServe }).Deno
  const upgrade = options.upgrade
  return new Promise((resolve, reject) => {
    const controller = new AbortController()
    try {
      const server = deno.serve(
        {
          hostname: options.hostname,
          port: options.port,
          signal: controller.signal,
          onError: (error) => failed(undefined, error),
          onListen: (addr) =>
            resolve({
              hostname: options.hostname,
              port: addr.port,
              close: async () => {
                // Aborting closes open connections too, live log streams included.
                controller.abort()
                await server.finished
              }
            })
        },
        async (request, info) => {
          try {
            return upgrade !== undefined && isWebSocketUpgrade(request)
              ? await relay(deno, request, upgrade, info?.remoteAddr?.hostname)
              : await fetch(request, { remoteAddr: info?.remoteAddr?.hostname })
          } catch (error) {
            return failed(request, error)
          }
        }
      )
    } catch (error) {
      reject(error)
    }
  })
}
