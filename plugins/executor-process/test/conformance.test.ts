// The process executor passes core's Executor conformance suite, and its plugin contributes it.
import { testExecutor } from "@dstack-ts/core/testing"
import { describe, expect, it } from "vitest"
import plugin, { ProcessExecutor } from "../src/index.ts"

testExecutor("process", ProcessExecutor.make(), { startFailure: { spec: { workingDir: "no-such-dir" }, reason: "Executor" } })
testExecutor("process (the plugin's)", plugin.executors!.process, { startFailure: { spec: { workingDir: "no-such-dir" }, reason: "Executor" } })

describe("the plugin", () => {
  it("contributes the executor process, named by its package", () => {
    expect(plugin.name).toBe("@dstack-ts/executor-process")
    expect(Object.keys(plugin.executors ?? {})).toEqual(["process"])
    expect(plugin.executors!.process.name).toBe("process")
  })
})
