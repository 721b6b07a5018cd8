/**
 * @dstack-ts/providers-builtin — the workflow providers `bash`, `python`, `docker`, `curl` and
 * `torchrun` (distributed PyTorch on a multi-node task). The default export is the plugin; the
 * providers are exported for custom builds and tests.
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import { bash, curl, docker, python, shellQuote, TORCHRUN_MASTER_PORT, torchrun } from "./providers.ts"

export { bash, curl, docker, python, shellQuote, TORCHRUN_MASTER_PORT, torchrun }

/** The plugin: contributes the providers bash, python, docker, curl and torchrun. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "Workflow providers bash, python, docker, curl and torchrun (multi-node)",
  providers: { bash, python, docker, curl, torchrun }
})

export default plugin
