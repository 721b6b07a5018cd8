// What a runner build takes from its plugins: executors by name and repo types; the plugin
// host refuses an executor of the wrong shape like any other contribution.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { definePlugin } from "../../src/plugin/Plugin.ts"
import { runnerContributions } from "../../src/runner/RunnerPlugins.ts"
import type { Executor } from "../../src/ports/Executor.ts"

const fake: Executor = { name: "fake", start: () => Effect.die("not started in this test") }

describe("runnerContributions", () => {
  it.effect("collects executors by their contributed name from every plugin", () =>
    Effect.gen(function*() {
      const a = definePlugin({ name: "@acme/executor-fake", version: "1.0.0", core: "^0.1.0", executors: { fake } })
      const b = definePlugin({ name: "@acme/executor-other", version: "1.0.0", core: "^0.1.0", executors: { other: { ...fake, name: "other" } } })
      const { executors, repos } = yield* runnerContributions([a, b])
      expect(Object.keys(executors).sort()).toEqual(["fake", "other"])
      expect(executors.fake).toBe(fake)
      expect(repos).toEqual({})
    }))

  it.effect("refuses an executor without start, naming the plugin and the executor", () =>
    Effect.gen(function*() {
      const bad = definePlugin({ name: "@acme/executor-broken", version: "1.0.0", core: "^0.1.0", executors: { broken: { name: "broken" } as unknown as Executor } })
      const error = yield* Effect.flip(runnerContributions([bad]))
      expect(error.problems.map((p) => p.reason)).toEqual(["InvalidContribution"])
      expect(error.message).toContain(`@acme/executor-broken@1.0.0 contributes executor "broken" that is not an Executor (with start)`)
    }))
})
