/**
 * A local TCP listener whose connections go through an SSH session to a port on the remote
 * host (`ssh -L`): each accepted socket opens a `direct-tcpip` channel on the host's current
 * session (reopened by the pool when it has dropped). Bytes flow both ways with half-close
 * kept; closing the tunnel stops the listener and cuts its connections. A caller in this
 * process may skip the listener: `connect` answers the channel itself (a Node.js Duplex), which
 * saves a pass of every byte through the loopback.
 */
import * as net from "node:net"
import type { Duplex } from "node:stream"
import type { Session } from "./SshSession.ts"

export interface SshTunnel {
  readonly localPort: number
  /** Why the last connection through the tunnel failed, unless one has opened since. */
  readonly lastError: () => string | undefined
  /**
   * One connection to the remote port without the listener: the `direct-tcpip` channel, with
   * half-close kept (`end()` sends EOF, `end` is the remote's EOF). Rejects when the session
   * cannot be opened or the host refuses the channel (nothing listens there); cut by `close`.
   */
  readonly connect: () => Promise<Duplex>
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
    const channels = new Set<Duplex>()
    let lastError: string | undefined
    let closed = false
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
        connect: async () => {
          if (closed) throw new Error("the tunnel is closed")
          const session = await options.session()
          const channel: Duplex = await session.ssh.forwardOut("127.0.0.1", 0, options.remoteHost, options.remotePort)
          lastError = undefined
          if (closed) {
            channel.destroy()
            throw new Error("the tunnel is closed")
          }
          channels.add(channel)
          channel.on("close", () => channels.delete(channel))
          return channel
        },
        close: () =>
          new Promise<void>((done) => {
            closed = true
            for (const channel of channels) channel.destroy()
            for (const socket of sockets) socket.destroy()
            server.close(() => done())
          })
      })
    })
  })
