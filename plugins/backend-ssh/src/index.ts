/**
 * @dstack-ts/backend-ssh — the `remote` backend (SSH fleet instances): provisions hosts the
 * user already has over SSH — ships the runner bundle, starts it supervised, detects the
 * machine — and removes it again. The default export is the plugin; `RemoteBackend` holds
 * `make` and the configuration schema for a custom server build or a test.
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as RemoteBackend from "./RemoteBackend.ts"

export { RemoteBackend }

/** The plugin: contributes the backend `remote` (its runners are reached with the `ssh` transport). */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "SSH fleet hosts (backend `remote`): ships and supervises the runner over SSH, detects CPUs, memory, disk and GPUs",
  backends: { remote: RemoteBackend.fromConfig }
})

export default plugin
