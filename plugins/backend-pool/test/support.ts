// A hub and a machine joined to it over a real loopback TCP connection (the byte stream the
// server's WebSocket adapter hands the hub), for the plugin's own tests. The machine's side
// is the real agent (Agent.serveMachine); the WebSocket path is in test/e2e/runner-pool.test.ts.
import { Requirements } from "@dstack-ts/core"
import { Effect, Schema, type Scope } from "effect"
import * as net from "node:net"
import * as Agent from "../src/Agent.ts"
import * as Hub from "../src/Hub.ts"
import type { Hello } from "../src/internal/Frames.ts"

/** Small requirements every test machine meets. */
export const requirements = Schema.decodeUnknownSync(Requirements)({ resources: { cpu: "1..", memory: "1GB.." } })

/** The instance configuration of `instanceId` in `projectName`, as the engine hands a backend. */
export const config = (projectName: string, instanceId: string) => ({ projectName, instanceName: instanceId, instanceId, sshKeys: [] })

/** Waits (polling every 20 ms) until `check` holds, failing with `what` after `timeoutMs`. */
export const until = (what: string, check: () => boolean, timeoutMs = 15_000) =>
  Effect.promise(async () => {
    const start = Date.now()
    while (!check()) {
      if (Date.now() - start > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`)
      await new Promise((r) => setTimeout(r, 20))
    }
  })

export const hello = (name: string, overrides: Partial<Hello> = {}): Hello => ({
  name,
  runnerPort: 10999,
  heartbeatSeconds: 1,
  resources: { cpus: 2, memoryMib: 4096, diskMib: 204_800, gpus: [], cpuArch: "x86", hostname: `${name}-host` },
  ...overrides
})

/** A loopback listener whose connections the hub takes as machines of `project`; its scope's end cuts them. */
export const hubListener = (hub: Hub.Hub, project: string): Effect.Effect<number, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ server: net.Server; sockets: Set<net.Socket> }>((resume) => {
      const sockets = new Set<net.Socket>()
      const server = net.createServer((socket) => {
        sockets.add(socket)
        socket.on("close", () => sockets.delete(socket))
        hub.accept(project, Hub.socketChannel(socket))
      })
      server.listen({ host: "127.0.0.1", port: 0 }, () => resume(Effect.succeed({ server, sockets })))
    }),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
        for (const socket of sockets) socket.destroy()
      })
  ).pipe(Effect.map(({ server }) => (server.address() as net.AddressInfo).port))

/** A raw connection to the hub as a channel, and the socket (to cut it); fails when refused. */
export const dial = (port: number) =>
  Effect.async<{ socket: net.Socket; channel: Hub.Channel }, Error>((resume) => {
    const socket = net.connect({ host: "127.0.0.1", port }, () => {
      socket.removeAllListeners("error")
      resume(Effect.succeed({ socket, channel: Hub.socketChannel(socket) }))
    })
    socket.once("error", (error) => resume(Effect.fail(error)))
  })

/** A machine joined through the agent, left when the scope closes. */
export const joinMachine = (port: number, h: Hello) =>
  Effect.acquireRelease(
    Effect.flatMap(dial(port), ({ channel, socket }) => Effect.map(Effect.promise(() => Agent.serveMachine(channel, h)), (joined) => ({ joined, socket }))),
    ({ socket }) => Effect.sync(() => socket.destroy())
  )
