// Test configuration for the whole workspace: each package's own tests plus the
// cross-package integration tests under test/.
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["core/test/**/*.test.ts", "client/test/**/*.test.ts", "cli/test/**/*.test.ts", "libs/*/test/**/*.test.ts", "plugins/*/test/**/*.test.ts", "test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "**/dist/**"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: "forks",
    sequence: { hooks: "list" },
    reporters: ["default", "./test/support/summary-reporter.ts"]
  }
})
