/**
 * @dstack-ts/state-embedded — the default StateStore: PostgreSQL compiled to WASM (PGlite) in
 * the server's own process, with job logs in append-only files beside it. Nothing to install
 * or run. The default export is the plugin (state store `embedded`); `EmbeddedStateStore` and
 * `FileLogs` hold the layers and the log store for a custom server build.
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as EmbeddedStateStore from "./EmbeddedStateStore.ts"
import * as FileLogs from "./FileLogs.ts"

export { EmbeddedStateStore, FileLogs }

/** The plugin: contributes the state store `embedded` (options: `data_dir`, `shared_buffers`). */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "StateStore in the server's process: PostgreSQL in WASM (PGlite) and file logs",
  stateStores: { embedded: EmbeddedStateStore.fromOptions }
})

export default plugin
