// configDecoder: how every plugin reads its configuration section — unknown keys refused by
// name, every wrong field reported at once, an absent section read as {}.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Schema } from "effect"
import { configDecoder } from "../../src/index.ts"

const Config = Schema.Struct({
  host: Schema.String,
  port: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.between(1, 65535))),
  maxInstances: Schema.optional(Schema.Number).pipe(Schema.fromKey("max_instances"))
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

  it("refuses a key the schema does not know, naming it", () => {
    const issue = failure({ host: "h", hsot: "x" })
    expect(issue.message).toMatch(/^invalid example backend configuration:/)
    expect(issue.message).toContain('"hsot"')
    expect(issue.cause._tag).toBe("ParseError")
  })

  it("names every wrong field at once, not only the first", () => {
    const issue = failure({ port: 0, max_instances: "many" })
    expect(issue.message).toContain('["host"]')
    expect(issue.message).toContain('["port"]')
    expect(issue.message).toContain('["max_instances"]')
  })

  it("reads an absent section as {} (so a required field is named as missing)", () => {
    expect(failure(undefined).message).toContain('["host"]')
    expect(failure(null).message).toContain("is missing")
  })

  it("lets a schema that checks its own keys accept ones it does not declare", () => {
    const lenient = configDecoder(Schema.Struct({ host: Schema.String }), "lenient section", { refuseUnknownKeys: false })
    expect(Effect.runSync(lenient({ host: "h", type: "x" }))).toEqual({ host: "h" })
  })
})
