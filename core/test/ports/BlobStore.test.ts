// The port's own in-memory store runs the conformance suite, and the port's key rules and
// error helpers are checked directly.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as BlobStore from "../../src/ports/BlobStore.ts"
import { testBlobStore } from "../../src/testing/index.ts"

testBlobStore("BlobStore.layerMemory", BlobStore.layerMemory, { largeSize: 300_001 })

describe("BlobStore key rules", () => {
  it.effect("validateKey accepts ordinary paths and returns them unchanged", () =>
    Effect.gen(function*() {
      expect(yield* BlobStore.validateKey("T", "put", "stacks/alice/mnist/0")).toBe("stacks/alice/mnist/0")
      expect(yield* BlobStore.validatePrefix("T", "list", "")).toBe("")
      expect(yield* BlobStore.validatePrefix("T", "list", "runs/")).toBe("runs/")
    }))

  it.effect("validatePrefix refuses a prefix that ends with two slashes", () =>
    Effect.gen(function*() {
      const result = yield* Effect.either(BlobStore.validatePrefix("T", "list", "runs//"))
      expect(Either.isLeft(result) && result.left.message).toContain("must not end with '/'")
    }))

  it("isRetryable is true only for Transport and Timeout", () => {
    const reasons = BlobStore.BlobStoreErrorReason.literals
    const retryable = reasons.filter((reason) =>
      new BlobStore.BlobStoreError({ module: "T", method: "m", reason }).isRetryable
    )
    expect(retryable).toEqual(["Transport", "Timeout"])
  })
})
