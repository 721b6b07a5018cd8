// `npm run test:deno`: the suites that prove the runtime run a second time under Deno — the
// adapters (every plugin package), the server, state, runner and repos of core, the client,
// the CLI, the browser SDK, the upstream client and every end-to-end test. Left to Node alone
// are suites whose code does not touch the runtime: pure domain, configuration, engine and
// port-contract logic, static checks of docs and imports, npm packaging, and the tests of the
// network-namespace test helper itself (the hosts it makes are still used on Deno by the e2e
// and plugin suites).
import { defineConfig, mergeConfig } from "vitest/config"
import base from "./vitest.config.ts"

export const NODE_ONLY = [
  "core/test/config/**",
  "core/test/domain/**",
  "core/test/engine/**",
  "core/test/ports/**",
  "core/test/services/**",
  "core/test/workflows/**",
  "core/test/internal/**",
  "cli/test/units.test.ts",
  "test/architecture/**",
  "test/docs/docs.test.ts",
  "test/netns/**",
  "test/packaging/**",
  // They only drive server processes, which are Node children under either runtime.
  "test/reliability/crash.test.ts",
  "test/reliability/replicas-load.test.ts",
  "test/reliability/runner-kill.test.ts"
]

export default mergeConfig(base, defineConfig({ test: { exclude: [...NODE_ONLY] } }))
