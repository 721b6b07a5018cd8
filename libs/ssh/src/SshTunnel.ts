/**
 * A local TCP listener whose connections go through an SSH session to a port on the remote
 * host (`ssh -L`): each accepted socket opens a `direct-tcpip` channel on the host's current
 * session (reopened by the pool when it has dropped). Bytes flow both ways with half-close
 * kept; closing the tunnel stops the listener and cuts its connections.
 */
import * as net from "node:net"
import type { Session } from "./SshSession.ts"

export interface SshTunnel {
  readonly localPort: number
  /** Why the last connection through the tunnel failed, unless one has opened since. */
  readonly lastError: () => string | undefined
  readonly close: () => Promise<void>
}

/**
 * Listens on `localHost:localPort` (0: any free port) and forwards to `remoteHost:remotePort`
 * as seen from the SSH host. Rejects with the listen error (EADDRINUSE …).
 */
export const openTunnel = (options: {
  readonly localHost: string
  readonly localPort: number
  readonly remoteHost: string
  readonly remotePort: number
  readonly session: () => Promise<Session>
}): Promise<SshTunnel> =>
  new Promise((resolve, reject) => {
    const sockets = new Set<net.Socket>()
    let lastError: string | undefined
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
      sockets.add(socket)
      socket.on("close", () => sockets.delete(socket))
      socket.on("error", () => socket.destroy())
      options.session()
        .then((session) => session.ssh.forwardOut("127.0.0.1", socket.remotePort ?? 0, options.remoteHost, options.remotePort))
        .then(
          (channel) => {
            lastError = undefined
            if (socket.destroyed) {
              channel.close()
              return
            }
            socket.pipe(channel)
            channel.pipe(socket)
            channel.on("error", () => socket.destroy())
            // An abrupt end of the channel (session lost) cuts the socket; an orderly one has ended it.
            channel.on("close", () => {
              if (!socket.writableEnded) socket.destroy()
            })
            socket.on("close", () => channel.close())
            socket.resume()
          },
          (error: unknown) => {
            lastError = error instanceof Error ? error.message : String(error)
            socket.destroy()
          }
        )
    })
    server.once("error", reject)
    server.listen({ host: options.localHost, port: options.localPort }, () => {
      server.off("error", reject)
      server.on("error", () => {})
      resolve({
        localPort: (server.address() as net.AddressInfo).port,
        lastError: () => lastError,
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy()
            server.close(() => done())
          })
      })
    })
  })
