// Conformance of core's built-in codecs (bytes, text, JSON) and the JSON acceptance rules.
import { describe, expect, it } from "@effect/vitest"
import { BuiltinCodecs } from "../../src/index.ts"
import { testCodec } from "../../src/testing/index.ts"

testCodec("bytes/octet-stream", BuiltinCodecs.bytes, {
  accepted: [
    { name: "a few bytes", value: new Uint8Array([0, 1, 2, 255]) },
    { name: "1 MiB of bytes", value: new Uint8Array(1 << 20).map((_, i) => i & 0xff) }
  ],
  rejected: [
    { name: "a string", value: "abc" },
    { name: "an ArrayBuffer", value: new ArrayBuffer(4) },
    { name: "an array of numbers", value: [1, 2, 3] }
  ],
  corrupt: []
})

testCodec("text/plain", BuiltinCodecs.text, {
  accepted: [
    { name: "ascii", value: "hello" },
    { name: "unicode", value: "héllo ✓ 日本" }
  ],
  rejected: [{ name: "a number", value: 1 }, { name: "bytes", value: new Uint8Array([104]) }],
  corrupt: [{ name: "invalid UTF-8", body: new Uint8Array([0x68, 0xff, 0xfe]) }]
})

testCodec("json/value", BuiltinCodecs.json, {
  accepted: [
    { name: "an object", value: { a: 1, b: [true, null, "x"], c: { d: 1.5 } } },
    { name: "an array", value: [1, 2, 3] },
    { name: "a number", value: 42 }
  ],
  rejected: [
    { name: "a Date", value: new Date(0) },
    { name: "NaN inside", value: { a: Number.NaN } },
    { name: "a function", value: () => 1 },
    { name: "a bigint", value: 1n },
    { name: "undefined", value: undefined }
  ],
  corrupt: [{ name: "truncated JSON", body: new TextEncoder().encode('{"a": [1, 2') }]
})

describe("notJson", () => {
  it("names the path of the first value JSON cannot hold", () => {
    expect(BuiltinCodecs.notJson({ a: [1, { b: Number.POSITIVE_INFINITY }] })).toBe("$.a[1].b is Infinity, which JSON cannot hold")
    expect(BuiltinCodecs.notJson({ when: new Date(0) })).toBe("$.when is a Date, not a plain object")
    expect(BuiltinCodecs.notJson({ a: { b: 1 }, c: [] })).toBeUndefined()
  })

  it("refuses cycles but allows the same object twice", () => {
    const shared = { x: 1 }
    expect(BuiltinCodecs.notJson({ a: shared, b: shared })).toBeUndefined()
    const cyclic: Record<string, unknown> = {}
    cyclic.self = cyclic
    expect(BuiltinCodecs.notJson(cyclic)).toBe("$.self is a cycle")
  })
})
