// `dstack run`'s arguments: the workflow, its own flags and `--NAME value` variables.
import { describe, expect, it } from "vitest"
import { parseRunArgs } from "../src/commands/run.ts"

describe("dstack run arguments", () => {
  it("takes the workflow, its flags, and any other --NAME value as a variable", () => {
    expect(parseRunArgs(["train", "--epochs", "3", "--lr=0.1", "-d", "--no-cache", "-n", "my-run"])).toEqual({
      workflow: "train", variables: { epochs: "3", lr: "0.1" }, detach: true, noCache: true, name: "my-run"
    })
    expect(parseRunArgs(["--who", "x", "hello"])).toMatchObject({ workflow: "hello", variables: { who: "x" } })
    // A value may start with a single dash (a negative number).
    expect(parseRunArgs(["t", "--offset", "-1"]).variables).toEqual({ offset: "-1" })
  })

  it("refuses a variable without a value, a second workflow, unknown short flags and no workflow", () => {
    expect(() => parseRunArgs(["train", "--epochs"])).toThrow(/--epochs needs a value/)
    expect(() => parseRunArgs(["train", "--epochs", "--lr", "1"])).toThrow(/--epochs needs a value/)
    expect(() => parseRunArgs(["a", "b"])).toThrow(/one workflow, got a and b/)
    expect(() => parseRunArgs(["a", "-x"])).toThrow(/Unknown option -x/)
    expect(() => parseRunArgs(["--epochs", "3"])).toThrow(/needs a workflow name/)
  })
})
