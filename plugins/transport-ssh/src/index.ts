/**
 * @dstack-ts/transport-ssh — the `ssh` runner transport: the server reaches a runner on an SSH
 * host (an SSH fleet instance) through an SSH tunnel to the runner's loopback port, and
 * forwards job ports the same way. The default export is the plugin; `SshTransport` holds the
 * transport for a custom build or a test.
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as SshTransport from "./SshTransport.ts"

export { SshTransport }

/** The plugin: contributes the transport `ssh`. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "Reaches runners on SSH hosts through SSH tunnels (key login, proxy_jump, keep-alive, reconnection); forwards job ports",
  transports: { ssh: SshTransport.fromConfig }
})

export default plugin
