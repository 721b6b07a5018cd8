/**
 * The `pool` runner transport: reaches the runner of a joined machine through the machine's
 * own connection to the server. `forward` listens on the server's loopback and carries each
 * connection as a stream to the port on the machine; `connect` is such a forward to the
 * runner's port with a plain fetch client in front of it.
 */
import { RunnerTransport } from "@dstack-ts/core"
import { Effect, type Scope } from "effect"
import * as net from "node:net"
import type { Hub } from "./Hub.ts"

const MODULE = "PoolTransport"

const validPort = (port: number, min: number) => Number.isInteger(port) && port >= min && port <= 65535

const checkTarget = (method: string, target: RunnerTransport.RunnerTarget) =>
  target.hostname === ""
    ? RunnerTransport.fail(MODULE, method, "Invalid", "the instance has no host name yet (a pool machine's key)")
    : Effect.void

/** A loopback listener whose connections go to `port` on the machine, closed with the scope. */
const listen = (hub: Hub, method: string, target: RunnerTransport.RunnerTarget, localPort: number, remotePort: number) =>
  Effect.acquireRelease(
    Effect.async<{ server: net.Server; sockets: Set<net.Socket>; port: number }, RunnerTransport.RunnerTransportError>((resume) => {
      const sockets = new Set<net.Socket>()
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        sockets.add(socket)
        socket.on("close", () => sockets.delete(socket))
        socket.setNoDelay(true)
        if (!hub.pipe(target.hostname, socket, remotePort)) socket.destroy()
      })
      server.once("error", (error: Error & { code?: string }) =>
        resume(RunnerTransport.fail(MODULE, method, error.code === "EADDRINUSE" || error.code === "EACCES" ? "Invalid" : "Transport", `cannot listen on 127.0.0.1:${localPort}: ${error.message}`, error)))
      server.listen({ host: "127.0.0.1", port: localPort }, () =>
        resume(Effect.succeed({ server, sockets, port: (server.address() as net.AddressInfo).port })))
    }),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
        sockets.forEach((s) => s.destroy())
      })
  )

/** The machine must be joined now; a machine that left is a retryable `Transport` failure naming why. */
const joined = (hub: Hub, method: string, target: RunnerTransport.RunnerTarget) => {
  if (hub.machine(target.hostname) !== undefined) return Effect.void
  const gone = hub.departure(target.hostname)
  return RunnerTransport.fail(MODULE, method, "Transport", gone === undefined
    ? `no pool machine ${target.hostname} is joined to this server`
    : `${gone.message} (at ${gone.at.toISOString()})`)
}

/** The transport over a hub. */
export const make = (hub: Hub): RunnerTransport.RunnerTransport => ({
  name: "pool",
  connect: (target) =>
    Effect.gen(function*() {
      yield* checkTarget("connect", target)
      if (!validPort(target.runnerPort, 1)) return yield* RunnerTransport.fail(MODULE, "connect", "Invalid", `runner port ${target.runnerPort} is not a port (1 to 65535)`)
      yield* joined(hub, "connect", target)
      const { port } = yield* listen(hub, "connect", target, 0, target.runnerPort)
      return RunnerTransport.fetchClient(MODULE, `http://127.0.0.1:${port}`)
    }),
  forward: (target, localPort, remotePort): Effect.Effect<RunnerTransport.ForwardedPort, RunnerTransport.RunnerTransportError, Scope.Scope> =>
    Effect.gen(function*() {
      yield* checkTarget("forward", target)
      if (!validPort(remotePort, 1)) return yield* RunnerTransport.fail(MODULE, "forward", "Invalid", `remote port ${remotePort} is not a port (1 to 65535)`)
      if (!validPort(localPort, 0)) return yield* RunnerTransport.fail(MODULE, "forward", "Invalid", `local port ${localPort} is not a port (0 to 65535)`)
      yield* joined(hub, "forward", target)
      const { port } = yield* listen(hub, "forward", target, localPort, remotePort)
      return { localHost: "127.0.0.1", localPort: port, remotePort }
    })
})
