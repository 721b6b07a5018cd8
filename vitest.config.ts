// Test configuration for the whole workspace: each package's own tests plus the
// cross-package integration tests under test/.
import { availableParallelism } from "node:os"
import { defineConfig } from "vitest/config"

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
