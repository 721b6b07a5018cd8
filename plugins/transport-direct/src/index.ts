/**
 * @dstack-ts/transport-direct — the `direct` runner transport: the server reaches a runner at
 * its host and port with plain HTTP, no tunnel. The engine uses it for a backend whose type
 * names no transport of its own when no `ssh` transport is installed. The default export is the
 * plugin; `DirectTransport` holds the transport for a custom build or a test.
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as DirectTransport from "./DirectTransport.ts"

export { DirectTransport }

/** The plugin: contributes the transport `direct`. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "Reaches runners at their host and port with plain HTTP (no tunnel, no port forwarding)",
  transports: { direct: DirectTransport.fromConfig }
})

export default plugin
