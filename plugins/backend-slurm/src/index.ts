/**
 * @dstack-ts/backend-slurm — the `slurm` backend: runs jobs as Slurm allocations on an HPC
 * cluster reached over SSH at its login node. The default export is the plugin; `SlurmBackend`
 * holds `make`, the configuration schema and the batch script for a custom build or a test.
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as SlurmBackend from "./SlurmBackend.ts"
import * as Slurm from "./internal/Slurm.ts"

export { Slurm, SlurmBackend }

/** The plugin: contributes the backend `slurm` (its runners are reached with the `ssh` transport through the login node). */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "Slurm clusters (backend `slurm`): offers from scontrol, a job as an sbatch allocation whose step runs the runner, reached over SSH through the login node",
  backends: { slurm: SlurmBackend.fromConfig }
})

export default plugin
