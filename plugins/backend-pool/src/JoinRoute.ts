/**
 * `GET /api/project/{project}/runner/join`: the WebSocket (subprotocol `dstack-tunnel`) a
 * machine joins the project's pool over. The router checks the bearer token and the project
 * membership; the route then hands the WebSocket to the server's runtime adapter as a tunnel to
 * a loopback port the hub listens on for this one connection (`acceptOnce`), so the adapter
 * carries the machine's frames there. Without `Upgrade: websocket` the route answers the checks
 * alone (`{project, protocol}`), for a machine to try its token.
 */
import { openTunnel, rawRoute, StateStore, TUNNEL_PROTOCOL } from "@dstack-ts/core"
import { Effect } from "effect"
import * as net from "node:net"
import { type Hub, socketChannel } from "./Hub.ts"
import * as PoolInstances from "./PoolInstances.ts"

export const JOIN_PATH = "/api/project/:project_name/runner/join"

/** How long the adapter may take to dial the one-connection listener. */
const DIAL_TIMEOUT_MS = 30_000

/** Listens on 127.0.0.1 for one connection, which the hub takes as a machine of `project`. */
const acceptOnce = (hub: Hub, project: string) =>
  Effect.async<{ port: number; close: () => void }, Error>((resume) => {
    const server = net.createServer({ allowHalfOpen: false }, (socket) => {
      server.close()
      clearTimeout(timer)
      socket.setNoDelay(true)
      hub.accept(project, socketChannel(socket))
    })
    server.maxConnections = 1
    const timer = setTimeout(() => server.close(), DIAL_TIMEOUT_MS)
    ;(timer as { unref?: () => void }).unref?.()
    server.once("error", (error) => resume(Effect.fail(error)))
    server.listen({ host: "127.0.0.1", port: 0 }, () =>
      resume(Effect.succeed({ port: (server.address() as net.AddressInfo).port, close: () => server.close() })))
  })

export const joinRoute = (hub: Hub) =>
  rawRoute({
    method: "GET",
    path: JOIN_PATH,
    summary: "A WebSocket (subprotocol dstack-tunnel) over which a machine joins the project's runner pool (dstack runner join)",
    tag: "runner-pool",
    access: { project: "user" },
    requestDescription: "Headers: Authorization: Bearer <token of a project member>, Upgrade: websocket, Sec-WebSocket-Protocol: dstack-tunnel",
    responseDescription: "101 Switching Protocols; then the pool's frames (hello, heartbeats, streams to the machine's ports; see @dstack-ts/backend-pool). Without Upgrade: {project, protocol}",
    handler: (ctx) =>
      Effect.gen(function*() {
        const project = ctx.projectName!
        // From the first join on, each machine is an instance row of the server's store.
        const store = ctx.service(StateStore.StateStore)
        hub.recordIn((h) => PoolInstances.make(h, store))
        const request = ctx.hono.req.raw
        if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
          return Response.json({ project, protocol: TUNNEL_PROTOCOL })
        }
        const listener = yield* acceptOnce(hub, project).pipe(Effect.orDie)
        const handed = openTunnel(request, {
          kind: "tcp",
          host: "127.0.0.1",
          port: listener.port,
          protocol: TUNNEL_PROTOCOL,
          done: (failed) => {
            if (failed) listener.close()
          }
        })
        if (!handed) {
          listener.close()
          return Response.json({ project, protocol: TUNNEL_PROTOCOL })
        }
        return new Response(null, { status: 204 })
      })
  })
