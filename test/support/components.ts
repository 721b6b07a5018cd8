// Decides whether a test that needs a real component (dockerd, sshd, PostgreSQL, Chromium)
// runs. On a laptop that lacks the component the test is skipped with a loud reason; under
// CI=true a missing component is a failure, because .ci/run installs and starts all of them.
import { describe } from "vitest"

export const inCI = process.env.CI === "true"

/**
 * Wraps `describe` for suites that need a real component.
 *
 * @example
 * describeWith("docker", await dockerAvailable(), "dockerd is not running", () => { ... })
 */
export const describeWith = (
  component: string,
  available: boolean,
  reason: string,
  body: () => void
): void => {
  if (available) {
    describe(`[${component}]`, body)
    return
  }
  if (inCI) {
    describe(`[${component}]`, () => {
      throw new Error(`${component} is required under CI=true but is not available: ${reason}`)
    })
    return
  }
  console.warn(`\n!!! SKIPPING tests that need ${component}: ${reason}\n`)
  describe.skip(`[${component}] (skipped: ${reason})`, body)
}
