// The Codec port's own helpers: make's guards, body collection, error shape.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Schema, Stream } from "effect"
import { Codec } from "../../src/index.ts"

const enc = new TextEncoder()

const upper = Codec.make<string>({
  id: "text/upper",
  application: "text",
  contentTypes: ["text/x-upper"],
  accepts: (o) => typeof o === "string",
  encode: (s) =>
    Effect.succeed({ contentType: "text/x-upper", application: "text", metadata: {}, body: enc.encode(s.toUpperCase()) }),
  decode: (e) => Effect.map(Codec.bytes(e.body), (b) => new TextDecoder().decode(b))
})

describe("Codec.make", () => {
  it.effect("encodes what it accepts and refuses the rest with Unsupported naming the codec", () =>
    Effect.gen(function*() {
      const ok = yield* upper.encode("abc")
      expect(new TextDecoder().decode(yield* Codec.bytes(ok.body))).toBe("ABC")
      const err = yield* Effect.flip(upper.encode(42 as unknown as string))
      expect(err.reason).toBe("Unsupported")
      expect(err.module).toBe("text/upper")
      expect(err.method).toBe("encode")
      expect(err.message).toContain("a number")
    }))

  it.effect("canDecode ignores MIME parameters and case", () =>
    Effect.sync(() => {
      expect(upper.canDecode("Text/X-Upper; charset=utf-8", "text")).toBe(true)
      expect(upper.canDecode("text/plain", "text")).toBe(false)
    }))

  it.effect("a defect inside a codec becomes an Unknown error, with the cause kept", () =>
    Effect.gen(function*() {
      const broken = Codec.make<string>({
        id: "text/broken",
        application: "text",
        contentTypes: ["text/x-broken"],
        accepts: () => true,
        encode: () => Effect.die(new Error("boom")),
        decode: () => Effect.sync(() => { throw new Error("kaput") })
      })
      const e1 = yield* Effect.flip(broken.encode("x"))
      expect(e1.reason).toBe("Unknown")
      expect(e1.message).toContain("boom")
      expect(e1.cause).toBeInstanceOf(Error)
      const e2 = yield* Effect.flip(broken.decode({ contentType: "text/x-broken", application: "text", metadata: {}, body: new Uint8Array() }))
      expect(e2.reason).toBe("Unknown")
      expect(e2.message).toContain("kaput")
    }))

  it("accepts never throws, even if the definition does", () => {
    const throwing = Codec.make<string>({ ...upper, accepts: () => { throw new Error("no") } })
    expect(throwing.accepts("x")).toBe(false)
  })
})

describe("Codec helpers", () => {
  it.effect("bytes collects a stream of chunks in order", () =>
    Effect.gen(function*() {
      const b = yield* Codec.bytes(Stream.make(new Uint8Array([1, 2]), new Uint8Array([]), new Uint8Array([3])))
      expect([...b]).toEqual([1, 2, 3])
    }))

  it.effect("attempt maps a throw to the given reason and keeps the message", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(Codec.attempt("m", "decode", "Invalid", "bad header", () => JSON.parse("{")))
      expect(e.reason).toBe("Invalid")
      expect(e.message).toMatch(/^bad header: /)
      expect(e.isRetryable).toBe(false)
    }))

  it("EncodedHeader reads snake_case and refuses a missing content type", () => {
    const ok = Schema.decodeUnknownSync(Codec.EncodedHeader)({ content_type: "image/png", application: "plot", metadata: { width: 1 } })
    expect(ok.contentType).toBe("image/png")
    const bad = Schema.decodeUnknownEither(Codec.EncodedHeader)({ application: "plot", metadata: {} })
    expect(Either.isLeft(bad)).toBe(true)
    if (Either.isLeft(bad)) expect(String(bad.left)).toContain("content_type")
  })

  it.effect("Codecs layer provides the installed list", () =>
    Effect.gen(function*() {
      const codecs = yield* Codec.Codecs
      expect(codecs.map((c) => c.id)).toEqual(["text/upper"])
    }).pipe(Effect.provide(Codec.layer([upper]))))
})
