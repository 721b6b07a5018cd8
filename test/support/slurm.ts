// Tests on a real Slurm cluster (./slurmCluster.ts): `describeWithSlurm` skips loudly where one
// cannot be made (not root, no network namespaces, slurm-wlm or munge not installed) and fails
// under CI=true, where .ci/setup-system.sh installs them.
import { describeWith } from "./components.ts"
import { slurmUnavailable } from "./slurmCluster.ts"

export * from "./slurmCluster.ts"

const unavailable = await slurmUnavailable()

/** `describe` for tests on a Slurm cluster: skipped with the reason where none can be made, failing under CI=true. */
export const describeWithSlurm = (body: () => void): void =>
  describeWith("slurm-cluster", unavailable === undefined, unavailable ?? "", body)
