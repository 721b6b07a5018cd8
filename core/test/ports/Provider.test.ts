// The Provider port: parameters decoded by the provider's schema with field paths in errors,
// job references checked, and lookup by name.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as Provider from "../../src/ports/Provider.ts"
import { testProvider } from "../../src/testing/index.ts"

// The upstream `curl` example provider.
const curl = Provider.make({
  name: "curl",
  parameters: Schema.Struct({
    url: Schema.String,
    output: Schema.String,
    artifacts: Schema.optional(Schema.Array(Schema.String))
  }),
  createJobs: (p) =>
    Effect.succeed([{
      image: "python:3.9",
      commands: [`curl ${p.url} -o ${p.output}`],
      ...(p.artifacts ? { artifacts: p.artifacts } : {})
    }])
})

const ctx = { workflowName: "tinyshakespeare" }

describe("Provider", () => {
  it.effect("creates jobs from valid parameters", () =>
    Effect.gen(function*() {
      const jobs = yield* curl.createJobs({ url: "https://example.com/input.txt", output: "data/input.txt", artifacts: ["data"] }, ctx)
      expect(jobs).toEqual([{ image: "python:3.9", commands: ["curl https://example.com/input.txt -o data/input.txt"], artifacts: ["data"] }])
    }))

  it.effect("refuses missing, mistyped and unknown parameters, naming each field", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(curl.createJobs({ url: 42, outptu: "x" }, ctx))
      expect(error.reason).toBe("Invalid")
      expect(error.message).toBe(
        "workflow \"tinyshakespeare\": the parameters of provider curl are invalid: unknown key `outptu`; did you mean `output`?; url: expected string, got 42; `output` is required"
      )
      expect(error.isRetryable).toBe(false)
    }))

  it.effect("refuses jobs that depend on a job that does not exist or on themselves", () =>
    Effect.gen(function*() {
      const broken = Provider.make({
        name: "broken",
        parameters: Schema.Struct({ self: Schema.Boolean }),
        createJobs: (p) => Effect.succeed([{ commands: ["a"] }, { commands: ["b"], dependsOn: [p.self ? 1 : 5] }])
      })
      expect((yield* Effect.flip(broken.createJobs({ self: false }, ctx))).message).toBe(
        "provider broken made job 1 refer to job 5, which does not exist (2 jobs)"
      )
      expect((yield* Effect.flip(broken.createJobs({ self: true }, ctx))).message).toContain("which is itself")
    }))

  it.effect("looks providers up by name; NotFound lists the installed ones", () =>
    Effect.gen(function*() {
      expect((yield* Provider.lookup("curl")).name).toBe("curl")
      const error = yield* Effect.flip(Provider.lookup("bash"))
      expect([error.reason, error.message]).toEqual(["NotFound", "no provider named \"bash\"; installed: curl"])
    }).pipe(Effect.provide(Provider.layer([curl]))))

  it("ProviderJob decodes the upstream snake_case keys", () => {
    const job = Schema.decodeUnknownSync(Provider.ProviderJob)({ commands: ["x"], working_dir: "src", depends_on: [0] })
    expect(job.workingDir).toBe("src")
    expect(job.dependsOn).toEqual([0])
  })
})

testProvider(curl, {
  valid: [{ url: "https://example.com/a", output: "a" }, { url: "u", output: "o", artifacts: ["data"] }],
  invalid: [[{ url: "u" }, "`output` is required"], [{ url: "u", output: "o", extra: 1 }, "unknown key `extra`"], ["not an object", "got \"not an object\""]]
})
