/**
 * @dstack-ts/executor-process — the `process` executor: a runner runs jobs without an image
 * as processes on its host. The default export is the plugin (for a runner build);
 * `ProcessExecutor` holds `make` and its options.
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as ProcessExecutor from "./ProcessExecutor.ts"

export { ProcessExecutor }

/** The plugin: contributes the executor `process` (jobs without an image). */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "Runs jobs without an image as processes on the runner's host (bash, own process group)",
  executors: { process: ProcessExecutor.make() }
})

export default plugin
