/**
 * @dstack-ts/backend-pool: machines that join a project's pool with `dstack runner join` (an
 * outbound WebSocket to the server, heartbeats, the machine's resources) as the `pool` backend,
 * reached through their own connection by the `pool` transport. One hub per plugin value: a
 * server build takes `poolPlugin` (or `makePoolPlugin()` for a hub of its own).
 */
import { Backend, type BackendContext, definePlugin, type Plugin } from "@dstack-ts/core"
import { Effect } from "effect"
import * as Hub from "./Hub.ts"
import { joinRoute } from "./JoinRoute.ts"
import { removeRoute } from "./RemoveRoute.ts"
import * as PoolBackend from "./PoolBackend.ts"
import * as PoolTransport from "./PoolTransport.ts"

export * as Agent from "./Agent.ts"
export * as Hub from "./Hub.ts"
export * as PoolBackend from "./PoolBackend.ts"
export * as PoolTransport from "./PoolTransport.ts"
export type { Hello } from "./internal/Frames.ts"
export { JOIN_PATH } from "./JoinRoute.ts"
export { REMOVE_PATH } from "./RemoveRoute.ts"

export const VERSION = "0.1.0"

/** The plugin with its own hub; `hub` is exposed for tests and diagnostics. */
export const makePoolPlugin = (options: Hub.HubOptions = {}): Plugin & { readonly hub: Hub.Hub } => {
  const hub = Hub.make(options)
  const plugin = definePlugin({
    name: "@dstack-ts/backend-pool",
    version: VERSION,
    core: "^0.1.0",
    description: "Machines joined with `dstack runner join` (outbound WebSocket, heartbeats) as the pool backend and transport",
    backends: {
      // No settings: the machines bring their own. A key given is refused, not ignored.
      [PoolBackend.TYPE]: (config: unknown, context?: BackendContext) => {
        const keys = Object.keys(typeof config === "object" && config !== null ? config : {}).filter((k) => k !== "type")
        return keys.length > 0
          ? Backend.fail("PoolBackend", "make", "Invalid", `the pool backend takes no settings (machines join with \`dstack runner join\`); remove ${keys.join(", ")}`)
          : Effect.succeed(PoolBackend.make(hub, context?.project))
      }
    },
    transports: { [PoolBackend.TYPE]: () => Effect.succeed(PoolTransport.make(hub)) },
    routes: { "pool/join": joinRoute(hub), "pool/remove": removeRoute(hub) }
  })
  return Object.freeze({ ...plugin, hub }) as Plugin & { readonly hub: Hub.Hub }
}

export const poolPlugin: Plugin = makePoolPlugin()
export default poolPlugin
