/**
 * @dstack-ts/executor-docker — the `docker` executor: a runner runs jobs with an image in
 * containers through the Docker Engine API. The default export is the plugin (for a runner
 * build); `DockerExecutor` holds `make`, its options and the stream demultiplexer.
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as DockerExecutor from "./DockerExecutor.ts"

export { DockerExecutor }

/** The plugin: contributes the executor `docker` (jobs with an image); the Docker client loads on first use. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "Runs jobs with an image in containers through the Docker Engine API (pull, ports, GPUs, registry auth)",
  executors: { docker: DockerExecutor.make() }
})

export default plugin
