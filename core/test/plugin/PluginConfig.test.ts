// configDecoder: how every plugin reads its configuration section — unknown keys refused by
// name (with the key meant, when one is close), every wrong field reported at once in one line
// and in the words `.dstack.yml` problems use, an absent section read as {}.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Schema } from "effect"
import { configDecoder } from "../../src/index.ts"

const Config = Schema.Struct({
  host: Schema.String,
  port: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.between(1, 65535))),
  maxInstances: Schema.optional(Schema.Number).pipe(Schema.fromKey("max_instances")),
  kubeconfig: Schema.optional(Schema.Struct({ data: Schema.String }))
})
const decode = configDecoder(Config, "example backend configuration")

const failure = (section: unknown) => {
  const result = Effect.runSync(Effect.either(decode(section)))
  if (Either.isRight(result)) throw new Error(`decoded ${JSON.stringify(result.right)}`)
  return result.left
}

describe("configDecoder", () => {
  it("decodes a good section into the schema's type", () => {
    expect(Effect.runSync(decode({ host: "h", port: 22, max_instances: 3 }))).toEqual({ host: "h", port: 22, maxInstances: 3 })
  })

  it("refuses a key the schema does not know, naming it and the key meant", () => {
    const issue = failure({ host: "h", hsot: "x" })
    expect(issue.message).toBe("invalid example backend configuration: unknown key `hsot`; did you mean `host`?")
    expect(issue.cause._tag).toBe("ParseError")
    // Nothing close: the keys it knows are listed; a nested key is named under its section.
    expect(failure({ host: "h", zzzzzz: 1 }).message).toBe(
      "invalid example backend configuration: unknown key `zzzzzz`; expected one of host, port, max_instances, kubeconfig"
    )
    expect(failure({ host: "h", kubeconfig: { dta: "x" } }).message).toBe(
      "invalid example backend configuration: kubeconfig: unknown key `dta`; did you mean `data`?; kubeconfig: `data` is required"
    )
  })

  it("names every wrong field at once, not only the first, in one line", () => {
    expect(failure({ port: 0, max_instances: "many" }).message).toBe(
      "invalid example backend configuration: `host` is required; port: expected a number between 1 and 65535, got 0; max_instances: expected number, got \"many\""
    )
  })

  it("reads an absent section as {} (so a required field is named as missing)", () => {
    expect(failure(undefined).message).toBe("invalid example backend configuration: `host` is required")
    expect(failure(null).message).toBe("invalid example backend configuration: `host` is required")
  })

  it("lets a schema that checks its own keys accept ones it does not declare", () => {
    const lenient = configDecoder(Schema.Struct({ host: Schema.String }), "lenient section", { refuseUnknownKeys: false })
    expect(Effect.runSync(lenient({ host: "h", type: "x" }))).toEqual({ host: "h" })
  })
})
