// Test configuration for the whole workspace: each package's own tests plus the
// cross-package integration tests under test/.
import { availableParallelism, homedir } from "node:os"
import { join } from "node:path"
import { defineConfig } from "vitest/config"

// A new embedded state store starts from a template cached in the user's cache directory
// (@dstack-ts/state-embedded): named here, so the servers that suites start with a HOME of their
// own share it too (inherited by the workers and the processes they start).
process.env.DSTACK_TS_CACHE_DIR ||= process.env.XDG_CACHE_HOME ? join(process.env.XDG_CACHE_HOME, "dstack-ts") : join(homedir(), ".cache", "dstack-ts")

export default defineConfig({
  test: {
    include: ["core/test/**/*.test.ts", "client/test/**/*.test.ts", "cli/test/**/*.test.ts", "libs/*/test/**/*.test.ts", "plugins/*/test/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/dist/**"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
    // The `dstack` command end-to-end suites spawn: built once per change of the sources (Node).
    globalSetup: ["./test/support/globalSetup.ts"],
    // Most suites wait on processes, containers and hosts rather than compute: two files at a
    // time even on a 2-core machine, where vitest's default (cores - 1) would run one.
    maxWorkers: Math.max(2, availableParallelism() - 1),
    minWorkers: 1,
    sequence: { hooks: "list" },
    reporters: ["default", "./test/support/summary-reporter.ts"]
  }
})
