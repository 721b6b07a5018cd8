/**
 * Conformance suite of the Codec port: every codec, in core or in a plugin, runs
 * `testCodec(name, codec, samples)` with objects it accepts, objects it must refuse and
 * corrupt payloads. A codec that declares file types is also checked to take back, as a file,
 * what it wrote (so `dstack pull` then `dstack push` keeps the codec), and its magic numbers
 * to match what it wrote.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Either, Stream } from "effect"
import * as Codec from "../ports/Codec.ts"

/** One object the codec accepts. */
export interface AcceptedSample<A> {
  readonly name: string
  readonly value: A
  /** What decode gives back when it is not `value` itself (CSV text decodes to a table). */
  readonly decoded?: unknown
  /** Options passed to `encode`. */
  readonly options?: Codec.EncodeOptions
}

/** A payload whose bytes are corrupt: decode must fail with `Invalid`. */
export interface CorruptSample {
  readonly name: string
  readonly body: Uint8Array
  /** Defaults to the codec's first content type. */
  readonly contentType?: string
}

export interface CodecSamples<A> {
  /** At least one; each must round-trip. */
  readonly accepted: ReadonlyArray<AcceptedSample<A>>
  /** Objects the codec must not accept: `accepts` is false and `encode` fails `Unsupported`. */
  readonly rejected: ReadonlyArray<{ readonly name: string; readonly value: unknown }>
  /** Empty only for a codec to which every byte string is valid (plain bytes). */
  readonly corrupt: ReadonlyArray<CorruptSample>
  /** Maps a decoded value and the expected one to comparable plain data (default: identity). */
  readonly normalize?: (value: unknown) => unknown
}

/** Splits bytes into chunks of odd sizes (about 16 of them), as a stored attachment streams back. */
const chunked = (body: Uint8Array): Stream.Stream<Uint8Array, Codec.CodecError> => {
  const size = Math.max(7, Math.ceil(body.length / 16) | 1)
  const parts: Array<Uint8Array> = []
  for (let at = 0; at < body.length; at += size) parts.push(body.subarray(at, at + size))
  return Stream.fromIterable(parts)
}

/** `toEqual`, with a fast path for large byte arrays (vitest compares them element by element). */
const expectSame = (actual: unknown, expected: unknown): void => {
  if (actual instanceof Uint8Array && expected instanceof Uint8Array) {
    expect(actual.length).toBe(expected.length)
    const firstDiff = actual.findIndex((b, i) => b !== expected[i])
    expect(firstDiff, "index of the first differing byte").toBe(-1)
    return
  }
  expect(actual).toEqual(expected)
}

const expectFailure = <A>(
  effect: Effect.Effect<A, Codec.CodecError>,
  reason: Codec.CodecErrorReason
) =>
  Effect.gen(function*() {
    const result = yield* Effect.either(effect)
    expect(Either.isLeft(result), `expected a CodecError with reason ${reason}`).toBe(true)
    if (Either.isLeft(result)) {
      expect(result.left._tag).toBe("CodecError")
      expect(result.left.reason).toBe(reason)
      expect(result.left.message ?? "").not.toBe("")
    }
  })

/**
 * Runs the Codec conformance suite for one codec.
 *
 * @example
 * testCodec("text/plain", BuiltinCodecs.text, {
 *   accepted: [{ name: "ascii", value: "hello" }],
 *   rejected: [{ name: "number", value: 1 }],
 *   corrupt: [{ name: "bad utf-8", body: new Uint8Array([0xff]) }]
 * })
 */
export const testCodec = <In, Out>(name: string, codec: Codec.Codec<In, Out>, samples: CodecSamples<In>): void => {
  const normalize = samples.normalize ?? ((v: unknown) => v)

  describe(`Codec conformance: ${name}`, () => {
    it("has an id under its application and at least one content type", () => {
      expect(samples.accepted.length).toBeGreaterThan(0)
      expect(codec.id.startsWith(`${codec.application}/`)).toBe(true)
      expect(codec.contentTypes.length).toBeGreaterThan(0)
      expect(codec.canDecode("application/x-dstack-not-a-type", "nothing")).toBe(false)
    })

    it("declares its file types well: extensions lower case with a dot, magic numbers not empty, its own content types", () => {
      for (const fileType of codec.fileTypes) {
        expect(fileType.extensions.length).toBeGreaterThan(0)
        for (const ext of fileType.extensions) expect(ext).toMatch(/^\.[a-z0-9][a-z0-9._+-]*$/)
        for (const magic of fileType.magic ?? []) expect(magic.bytes.length).toBeGreaterThan(0)
        if (fileType.contentType !== undefined) {
          expect(codec.contentTypes.map(Codec.mediaType)).toContain(Codec.mediaType(fileType.contentType))
        }
      }
    })

    for (const sample of samples.accepted) {
      const expected = "decoded" in sample ? sample.decoded : sample.value

      it.effect(`round-trips ${sample.name}`, () =>
        Effect.gen(function*() {
          expect(codec.accepts(sample.value)).toBe(true)
          const encoded = yield* codec.encode(sample.value, sample.options)
          expect(codec.contentTypes.map(Codec.mediaType)).toContain(Codec.mediaType(encoded.contentType))
          expect(encoded.application).toBe(codec.application)
          expect(codec.canDecode(encoded.contentType, encoded.application)).toBe(true)
          // Metadata is stored as JSON: it must survive a JSON round trip unchanged.
          expect(JSON.parse(JSON.stringify(encoded.metadata))).toEqual(encoded.metadata)
          const body = yield* Codec.bytes(encoded.body)
          expect(body.length).toBeGreaterThan(0)

          const stored = { ...encoded, metadata: JSON.parse(JSON.stringify(encoded.metadata)), body }
          const decoded = yield* codec.decode(stored)
          expectSame(normalize(decoded), normalize(expected))

          // Pulled attachments arrive as a stream of chunks.
          const streamed = yield* codec.decode({ ...stored, body: chunked(body) })
          expectSame(normalize(streamed), normalize(expected))

          // A pulled file, named with the extension the codec declares, pushes back with it.
          const extension = Codec.extensionFor(codec, encoded.contentType)
          if (extension !== undefined) {
            const fromFile = codec.fromFile(body, `pulled${extension}`)
            expect(codec.accepts(fromFile), `accepts what fromFile reads from pulled${extension}`).toBe(true)
            const fileType = codec.fileTypes.find((t) => t.extensions.includes(extension))
            if ((fileType?.magic ?? []).length > 0) {
              expect(codec.sniff(body.subarray(0, Codec.SNIFF_BYTES)), "its magic number matches what it wrote").toBe(true)
            }
          }
        }))
    }

    for (const sample of samples.rejected) {
      it.effect(`refuses ${sample.name}`, () =>
        Effect.gen(function*() {
          expect(codec.accepts(sample.value)).toBe(false)
          yield* expectFailure(codec.encode(sample.value as In), "Unsupported")
        }))
    }

    for (const sample of samples.corrupt) {
      it.effect(`fails with Invalid on ${sample.name}`, () =>
        expectFailure(
          codec.decode({
            contentType: sample.contentType ?? codec.contentTypes[0],
            application: codec.application,
            metadata: {},
            body: sample.body
          }),
          "Invalid"
        ))
    }

    it.effect("refuses to decode a foreign content type with Unsupported", () =>
      expectFailure(
        codec.decode({
          contentType: "application/x-dstack-not-a-type",
          application: "nothing",
          metadata: {},
          body: Stream.fromChunk(Chunk.of(new Uint8Array([1, 2, 3])))
        }),
        "Unsupported"
      ))
  })
}
