/**
 * @dstack-ts/state-postgres — the StateStore on PostgreSQL, for servers with several replicas
 * or durability beyond a process crash. The default export is the plugin; `PostgresStateStore`
 * holds the layers for a custom server build.
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as PostgresStateStore from "./PostgresStateStore.ts"

export { PostgresStateStore }

export default definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "StateStore on a PostgreSQL server (multi-replica servers)",
  stateStores: { postgres: PostgresStateStore.fromOptions }
})
