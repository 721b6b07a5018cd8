/**
 * @dstack-ts/transport-local — the `local` runner transport: reaches runners on this machine
 * over loopback and forwards ports with a local TCP proxy. The default export is the plugin;
 * `LocalTransport` holds the transport itself for a custom server build.
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as LocalTransport from "./LocalTransport.ts"

export { LocalTransport }

/** The plugin: contributes the transport `local` (the engine picks it for `local` instances). */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "Reaches runners on this machine over loopback; forwards ports with a local TCP proxy",
  transports: { local: LocalTransport.fromConfig }
})

export default plugin
