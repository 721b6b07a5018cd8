/**
 * Serving on Node.js through @hono/node-server; an upgrade request (a WebSocket) goes to the
 * `upgrade` handler, and a connection it accepts is carried byte for byte to its target over TCP.
 */
import type { IncomingMessage, Server } from "node:http"
import type { AddressInfo, Socket } from "node:net"
import * as net from "node:net"
import { acceptMessages, acceptSocket, acceptTunnel } from "./nodeTunnel.ts"
import { isMessagesTarget, isSocketTarget, isTunnelTarget, type ServeFunction, type UpgradeHandler } from "./types.ts"

const STATUS_TEXT: Readonly<Record<number, string>> = { 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable" }

/** Writes a whole HTTP/1.1 answer on a socket that asked to upgrade, then closes it. */
const answer = async (socket: Socket, response: Response): Promise<void> => {
  const body = Buffer.from(await response.arrayBuffer())
  let head = `HTTP/1.1 ${response.status} ${response.statusText || STATUS_TEXT[response.status] || ""}\r\n`
  response.headers.forEach((value, name) => {
    if (name !== "content-length" && name !== "connection" && name !== "transfer-encoding") head += `${name}: ${value}\r\n`
  })
  head += `content-length: ${body.length}\r\nconnection: close\r\n\r\n`
  socket.end(Buffer.concat([Buffer.from(head, "latin1"), body]))
}

const requestOf = (req: IncomingMessage): Request => {
  const headers = new Headers()
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue
    for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v)
  }
  return new Request(`http://${req.headers.host ?? "localhost"}${req.url ?? "/"}`, { method: req.method ?? "GET", headers })
}

const onUpgrade = (handler: UpgradeHandler) => (req: IncomingMessage, socket: Socket, head: Buffer): void => {
  socket.on("error", () => socket.destroy())
  handler(requestOf(req), req.socket.remoteAddress).then(
    (result) => {
      if (result instanceof Response) return answer(socket, result)
      if (isTunnelTarget(result)) return acceptTunnel(req, socket, head, result, (status, message) => void answer(socket, new Response(message, { status })))
      if (isMessagesTarget(result)) return acceptMessages(req, socket, head, result)
      if (isSocketTarget(result)) return acceptSocket(req, socket, head, result)
      let ended = false
      const end = (failed: boolean) => {
        if (ended) return
        ended = true
        result.done(failed)
      }
      const upstream = net.connect({ host: result.host, port: result.port })
      let connected = false
      upstream.once("connect", () => {
        connected = true
        upstream.setNoDelay(true)
        socket.setNoDelay(true)
        let text = `${req.method ?? "GET"} ${result.path} HTTP/1.1\r\n`
        for (const [name, value] of Object.entries(result.headers)) text += `${name}: ${value}\r\n`
        upstream.write(`${text}\r\n`, "latin1")
        if (head.length > 0) upstream.write(head)
        socket.pipe(upstream)
        upstream.pipe(socket)
      })
      upstream.on("error", (error) => {
        if (!connected) {
          end(true)
          void answer(socket, new Response(`cannot reach the service replica: ${error.message}`, { status: 502 }))
        } else {
          socket.destroy()
        }
      })
      upstream.on("close", () => {
        socket.destroy()
        end(!connected)
      })
      socket.on("close", () => {
        upstream.destroy()
        end(false)
      })
    }
  ).catch(() => socket.destroy())
}

export const serve: ServeFunction = async (fetch, options) => {
  const { serve: nodeServe } = await import("@hono/node-server")
  // Upgraded sockets belong to no HTTP request any more: closing the server ends them too.
  const upgraded = new Set<Socket>()
  return new Promise((resolve, reject) => {
    const server = nodeServe({ fetch, hostname: options.hostname, port: options.port }, (info: AddressInfo) => {
      resolve({
        hostname: options.hostname,
        port: info.port,
        close: () =>
          new Promise<void>((done) => {
            const http = server as Server
            http.close(() => done())
            // Live log streams never end on their own: close them too.
            http.closeAllConnections?.()
            for (const socket of upgraded) socket.destroy()
          })
      })
    })
    if (options.upgrade !== undefined) {
      const handle = onUpgrade(options.upgrade)
      server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
        upgraded.add(socket)
        socket.once("close", () => upgraded.delete(socket))
        handle(req, socket, head)
      })
    }
    server.once("error", reject)
  })
}
