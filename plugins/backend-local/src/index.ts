/**
 * @dstack-ts/backend-local — the `local` backend: runs jobs on this machine, each instance a
 * runner process on 127.0.0.1. The default export is the plugin; `LocalBackend` holds `make`
 * and the configuration schema for a custom server build.
 */
import { definePlugin, RunnerLaunch } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as LocalBackend from "./LocalBackend.ts"

/** How to spawn a runner build on this runtime: core's `RunnerLaunch.RunnerCommand`. */
const RunnerCommand = RunnerLaunch.RunnerCommand

export { LocalBackend, RunnerCommand }

/** The plugin: contributes the backend `local`. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "Runs jobs on this machine: one offer for its CPUs, memory, disk and GPUs; runners as local processes",
  backends: { local: LocalBackend.fromConfig }
})

export default plugin
