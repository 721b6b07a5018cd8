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

describe("what a codec declares about files", () => {
  const declared = Codec.make<string>({
    ...upper,
    fileTypes: [{ extensions: [".UPPER", ".up.txt"], magic: [{ bytes: "UP:" }, { offset: 2, bytes: [0xca, 0xfe] }] }],
    fromFile: (bytes) => new TextDecoder("utf-8", { fatal: true }).decode(bytes)
  })

  it("extensions are kept lower case; the first of the file type of a content type is what a pull writes", () => {
    expect(declared.fileTypes[0].extensions).toEqual([".upper", ".up.txt"])
    expect(Codec.extensionFor(declared, "text/x-upper; charset=utf-8")).toBe(".upper")
    expect(Codec.extensionFor(upper, "text/x-upper")).toBeUndefined()
  })

  it("sniff matches any declared magic number at its offset, and nothing without one", () => {
    expect(declared.sniff(enc.encode("UP:hello"))).toBe(true)
    expect(declared.sniff(new Uint8Array([0, 0, 0xca, 0xfe]))).toBe(true)
    expect(declared.sniff(new Uint8Array([0xca, 0xfe]))).toBe(false)
    expect(declared.sniff(enc.encode("UP"))).toBe(false)
    expect(upper.sniff(enc.encode("UP:hello"))).toBe(false)
  })

  it("a sniffer or fromFile that throws means 'not this format', never an exception", () => {
    const throwing = Codec.make<string>({
      ...upper,
      sniff: () => { throw new Error("boom") },
      fromFile: () => { throw new Error("boom") }
    })
    expect(throwing.sniff(new Uint8Array(4))).toBe(false)
    expect(throwing.fromFile(new Uint8Array(4), "a.x")).toBeUndefined()
    expect(declared.fromFile(new Uint8Array([0xff]), "a.upper")).toBeUndefined()
    // Without fromFile, a file stands for its bytes.
    const bytes = new Uint8Array([1])
    expect(upper.fromFile(bytes, "a")).toBe(bytes)
  })

  it("extensionsOf lists a name's compound and simple extensions, lower case, ignoring folders and dot files", () => {
    expect(Codec.extensionsOf("/data/Chart.VL.json")).toEqual([".vl.json", ".json"])
    expect(Codec.extensionsOf("a.b/c")).toEqual([])
    expect(Codec.extensionsOf(".bashrc")).toEqual([])
    expect(Codec.extensionsOf("C:\\x\\w.npy")).toEqual([".npy"])
  })

  it("hasMagic reads a string as Latin-1 bytes", () => {
    expect(Codec.hasMagic(new Uint8Array([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1]), { bytes: "\x93NUMPY" })).toBe(true)
    expect(Codec.hasMagic(new Uint8Array([0x93]), { bytes: "\x93NUMPY" })).toBe(false)
    expect(Codec.hasMagic(new Uint8Array([1]), { bytes: [] })).toBe(false)
  })
})
