/**
 * A TCP forward on loopback: a server on `127.0.0.1:localPort` that pipes every connection to
 * `targetHost:targetPort`. Promise-based; the transport ties its life to a scope.
 */
import * as net from "node:net"

export interface TcpForward {
  /** The port actually bound (the one asked for, or a free one for 0). */
  readonly localPort: number
  /** Stops listening and cuts the open connections. */
  readonly close: () => Promise<void>
}

/** Listens on `127.0.0.1:localPort`; rejects with the listen error (EADDRINUSE, EACCES …). */
export const openTcpForward = (localPort: number, targetHost: string, targetPort: number): Promise<TcpForward> =>
  new Promise((resolve, reject) => {
    const sockets = new Set<net.Socket>()
    // Half-open on both sides: a client that ends its request still reads the whole answer.
    const server = net.createServer({ allowHalfOpen: true }, (client) => {
      const upstream = net.connect({ host: targetHost, port: targetPort, allowHalfOpen: true })
      sockets.add(client)
      sockets.add(upstream)
      const cleanup = () => {
        client.destroy()
        upstream.destroy()
        sockets.delete(client)
        sockets.delete(upstream)
      }
      // Either side closing or failing (the target not listening) ends both.
      client.on("error", cleanup).on("close", cleanup)
      upstream.on("error", cleanup).on("close", cleanup)
      client.pipe(upstream)
      upstream.pipe(client)
    })
    server.once("error", reject)
    server.listen({ host: "127.0.0.1", port: localPort }, () => {
      server.off("error", reject)
      const address = server.address() as net.AddressInfo
      resolve({
        localPort: address.port,
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy()
            sockets.clear()
            server.close(() => done())
          })
      })
    })
  })
