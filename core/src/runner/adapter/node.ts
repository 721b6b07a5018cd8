/** Serving the runner on Node.js, through @hono/node-server. */
import type { AddressInfo } from "node:net"
import type { Server } from "node:http"
import type { ServeFunction } from "./types.ts"

export const serve: ServeFunction = async (fetch, options) => {
  const { serve: nodeServe } = await import("@hono/node-server")
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
          })
      })
    })
    server.once("error", reject)
  })
}
