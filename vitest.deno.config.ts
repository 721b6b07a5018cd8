// `npm run test:deno`: the suites that prove the runtime run a second time under Deno — the
// adapters (every plugin package), the server, state, runner and repos of core, the client,
// the CLI, the browser SDK, the upstream client and every end-to-end test. Left to Node alone
// are suites whose code does not touch the runtime: pure domain, configuration, engine and
// port-contract logic, static checks of docs and imports, npm packaging, and the tests of the
// network-namespace test helper itself (the hosts it makes are still used on Deno by the e2e
// and plugin suites). Also left to Node: the end-to-end suites whose subject is the engine's
// or a service's logic over parts other suites already run on Deno (the engine and replicas
// suites, autoscaling, rolling deployment, failed replicas and the store use of a scale from zero — the proxy itself runs on Deno in services-proxy
// and services-docker —, the workflow DAG, the .npy codec, the Slurm and Kubernetes backends
// end to end, whose plugins' own suites run on Deno; the SSH fleet e2e too, whose transport,
// backend and attach run on Deno in the transport-ssh and backend-ssh suites and attach-netns),
// and the reliability suites, which
// drive server processes started with Node. Also left to Node, for CI's time budget, suites that
// repeat on Deno what others prove there: the upstream Python client (its subject is the wire
// shapes, which do not depend on the runtime; the server's HTTP layer runs on Deno under the
// CLI, SDK and proxy suites), the examples and the README tour (the CLI on Deno is driven by the
// CLI suites; examples/custom-server, a server build started with `deno run`, has a file of its
// own that does run on Deno) and the CLI's secret commands (the server's secrets suite runs on Deno).
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
  "test/e2e/engine.test.ts",
  "test/e2e/replicas.test.ts",
  "test/e2e/services-autoscaling.test.ts",
  "test/e2e/services-rolling.test.ts",
  "test/e2e/services-failure.test.ts",
  "test/e2e/services-store-use.test.ts",
  "test/e2e/workflows*.test.ts",
  "test/e2e/stacks-npy.test.ts",
  "test/e2e/slurm.test.ts",
  "test/e2e/kubernetes.test.ts",
  "test/e2e/fleets-netns.test.ts",
  "test/upstream/client.test.ts",
  "test/e2e/examples.test.ts",
  "test/docs/readme-tour.test.ts",
  "test/e2e/cli-secrets.test.ts",
  "test/reliability/**"
]

export default mergeConfig(base, defineConfig({ test: { exclude: [...NODE_ONLY] } }))
