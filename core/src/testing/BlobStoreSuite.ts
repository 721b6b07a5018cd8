/**
 * The conformance suite every BlobStore implementation runs: round trips of every body kind
 * and size, stat and metadata, overwrite, delete, prefix listing, key rules and missing keys.
 * Keys live under a random root, so the suite also runs against a shared store (redis, s3).
 */
import { expect, layer } from "@effect/vitest"
import { Chunk, Effect, Either, Layer, Stream } from "effect"
import * as BlobStore from "../ports/BlobStore.ts"

export interface BlobStoreSuiteOptions {
  /**
   * The size of the largest value written, in bytes (default 9 MiB + 1: more than one default
   * 8 MiB chunk). Implementations with small chunks still see many-chunk values.
   */
  readonly largeSize?: number
}

const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/** Deterministic bytes: a cheap generator so that large values need no randomness source. */
export const patternBytes = (size: number, seed = 1): Uint8Array => {
  const out = new Uint8Array(size)
  let x = seed >>> 0 || 1
  for (let i = 0; i < size; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

const expectFailure = <A>(
  effect: Effect.Effect<A, BlobStore.BlobStoreError>,
  reason: BlobStore.BlobStoreErrorReason
) =>
  Effect.map(Effect.either(effect), (result) => {
    expect(Either.isLeft(result), `expected a ${reason} failure`).toBe(true)
    const error = (result as Either.Left<BlobStore.BlobStoreError, A>).left
    expect(error._tag).toBe("BlobStoreError")
    expect(error.reason).toBe(reason)
    return error
  })

/**
 * Registers the BlobStore conformance tests for one implementation.
 *
 * @example
 * testBlobStore("UnstorageBlobStore (memory)", UnstorageBlobStore.layerMemory({ chunkSize: 1000 }))
 */
export const testBlobStore = <E>(
  name: string,
  storeLayer: Layer.Layer<BlobStore.BlobStore, E>,
  options: BlobStoreSuiteOptions = {}
): void => {
  const largeSize = options.largeSize ?? 9 * 1024 * 1024 + 1
  const root = `conformance-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`
  const k = (path: string) => `${root}/${path}`

  layer(storeLayer, { timeout: 60_000 })(`BlobStore conformance: ${name}`, (it) => {
    it.effect("round-trips a string and reports size and sha256 digest", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        const bytes = new TextEncoder().encode("hello, stacks")
        const result = yield* store.put(k("text"), "hello, stacks")
        expect(result).toEqual({ key: k("text"), size: bytes.length, digest: yield* BlobStore.sha256Hex(bytes) })
        const back = yield* store.getBytes(k("text"))
        expect(new TextDecoder().decode(back)).toBe("hello, stacks")
      }))

    it.effect("stores an empty value (0 bytes, digest of nothing)", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        const result = yield* store.put(k("empty"), new Uint8Array(0))
        expect(result.size).toBe(0)
        expect(result.digest).toBe(EMPTY_SHA256)
        expect((yield* store.getBytes(k("empty"))).length).toBe(0)
        const stat = yield* store.stat(k("empty"))
        expect(stat.size).toBe(0)
        expect(stat.digest).toBe(EMPTY_SHA256)
        expect(yield* store.has(k("empty"))).toBe(true)
        // An empty stream body is an empty value too.
        expect((yield* store.put(k("empty-stream"), Stream.empty)).size).toBe(0)
        expect(yield* store.has(k("empty-stream"))).toBe(true)
      }))

    it.effect("keeps every byte value intact (binary, not text)", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        const bytes = new Uint8Array(512)
        for (let i = 0; i < bytes.length; i++) bytes[i] = (255 - i) & 0xff
        yield* store.put(k("binary"), bytes)
        expect(sameBytes(yield* store.getBytes(k("binary")), bytes)).toBe(true)
      }))

    it.effect("round-trips sizes from 1 byte to several chunks, from whole bytes and from streams", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        for (const size of [1, 1000, 1001, 65_537, largeSize]) {
          const bytes = patternBytes(size, size)
          const digest = yield* BlobStore.sha256Hex(bytes)
          expect(yield* store.put(k(`size/${size}`), bytes)).toEqual({ key: k(`size/${size}`), size, digest })
          expect(sameBytes(yield* store.getBytes(k(`size/${size}`)), bytes), `bytes of ${size}`).toBe(true)
          // The same value as a stream of uneven pieces.
          const pieces: Array<Uint8Array> = []
          for (let at = 0, step = 1; at < size; at += step, step = (step * 7 + 3) % 70_001 || 1) {
            pieces.push(bytes.subarray(at, Math.min(size, at + step)))
          }
          const streamed = yield* store.put(k(`stream/${size}`), Stream.fromIterable(pieces))
          expect(streamed.digest).toBe(digest)
          const blob = yield* store.get(k(`stream/${size}`))
          expect(blob.stat.size).toBe(size)
          const chunks = yield* Stream.runCollect(blob.body)
          expect(sameBytes(BlobStore.concatBytes(Chunk.toReadonlyArray(chunks)), bytes), `stream of ${size}`).toBe(true)
        }
      }))

    it.effect("accepts a web ReadableStream body", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        const parts = [new Uint8Array([1, 2, 3]), new Uint8Array([4]), new Uint8Array([5, 6])]
        const readable = new ReadableStream<Uint8Array>({
          start(controller) {
            for (const p of parts) controller.enqueue(p)
            controller.close()
          }
        })
        expect((yield* store.put(k("readable"), readable)).size).toBe(6)
        expect([...(yield* store.getBytes(k("readable")))]).toEqual([1, 2, 3, 4, 5, 6])
      }))

    it.effect("accepts an async iterable body (an async generator, a Node Readable) in uneven pieces", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        const bytes = patternBytes(largeSize, 11)
        const digest = yield* BlobStore.sha256Hex(bytes)
        async function* pieces() {
          for (let at = 0, step = 1; at < bytes.length; at += step, step = (step * 13 + 5) % 150_001 || 1) {
            yield bytes.subarray(at, Math.min(bytes.length, at + step))
          }
        }
        expect(yield* store.put(k("iterable"), pieces())).toEqual({ key: k("iterable"), size: largeSize, digest })
        expect(sameBytes(yield* store.getBytes(k("iterable")), bytes)).toBe(true)
        // An empty iterable is an empty value.
        async function* nothing(): AsyncGenerator<Uint8Array> {}
        expect((yield* store.put(k("iterable-empty"), nothing())).size).toBe(0)
        expect((yield* store.getBytes(k("iterable-empty"))).length).toBe(0)
      }))

    it.effect("a failing ReadableStream or async iterable fails put with Unknown, keeping the cause and the old value", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        yield* store.put(k("keep-web"), "old value")
        const cause = new Error("connection reset by peer")
        let pulls = 0
        const readable = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (pulls++ < 3) controller.enqueue(patternBytes(Math.ceil(largeSize / 2), pulls))
            else controller.error(cause)
          }
        })
        const web = yield* expectFailure(store.put(k("keep-web"), readable), "Unknown")
        expect(web.message).toContain("reading the body failed: connection reset by peer")
        expect(web.cause).toBe(cause)
        expect(new TextDecoder().decode(yield* store.getBytes(k("keep-web")))).toBe("old value")

        async function* failing() {
          yield patternBytes(largeSize, 5)
          throw cause
        }
        const iterable = yield* expectFailure(store.put(k("never-iterable"), failing()), "Unknown")
        expect(iterable.cause).toBe(cause)
        expect(yield* store.has(k("never-iterable"))).toBe(false)
      }))

    it.effect("a body that yields something other than bytes fails put with Invalid", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        async function* strings() {
          yield new Uint8Array([1])
          yield "text" as unknown as Uint8Array
        }
        const error = yield* expectFailure(store.put(k("not-bytes"), strings()), "Invalid")
        expect(error.message).toContain("not bytes")
        expect(yield* store.has(k("not-bytes"))).toBe(false)
      }))

    it.effect("stores content type and metadata with the value", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        yield* store.put(k("typed"), "a,b\n1,2\n", { contentType: "text/csv", metadata: { rows: "1", owner: "alice" } })
        const stat = yield* store.stat(k("typed"))
        expect(stat.key).toBe(k("typed"))
        expect(stat.contentType).toBe("text/csv")
        expect(stat.metadata).toEqual({ rows: "1", owner: "alice" })
        expect(typeof stat.updatedAt).toBe("number")
        const blob = yield* store.get(k("typed"))
        expect(blob.stat).toEqual(stat)
        // Without options: no content type, empty metadata.
        yield* store.put(k("untyped"), "x")
        const plain = yield* store.stat(k("untyped"))
        expect(plain.contentType).toBeUndefined()
        expect(plain.metadata).toEqual({})
      }))

    it.effect("overwrites a value completely, larger then smaller", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        const big = patternBytes(largeSize, 7)
        yield* store.put(k("over"), "first", { contentType: "text/plain", metadata: { v: "1" } })
        yield* store.put(k("over"), big)
        expect(sameBytes(yield* store.getBytes(k("over")), big)).toBe(true)
        yield* store.put(k("over"), "third")
        expect(new TextDecoder().decode(yield* store.getBytes(k("over")))).toBe("third")
        const stat = yield* store.stat(k("over"))
        expect(stat.size).toBe(5)
        expect(stat.contentType).toBeUndefined()
        expect(stat.metadata).toEqual({})
      }))

    it.effect("deletes a value; deleting a missing key succeeds", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        yield* store.put(k("gone"), patternBytes(3000))
        yield* store.delete(k("gone"))
        expect(yield* store.has(k("gone"))).toBe(false)
        yield* expectFailure(store.get(k("gone")), "NotFound")
        yield* expectFailure(store.stat(k("gone")), "NotFound")
        yield* store.delete(k("gone"))
        yield* store.delete(k("never-was"))
        expect(yield* Stream.runCollect(store.list(k("gone")))).toHaveLength(0)
      }))

    it.effect("lists keys by string prefix, sorted", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        for (const key of ["list/a/2", "list/a/1", "list/ab", "list/b/x/y", "list/a"]) {
          yield* store.put(k(key), key)
        }
        const list = (prefix: string) => Effect.map(Stream.runCollect(store.list(k(prefix))), Chunk.toReadonlyArray)
        expect(yield* list("list/a/")).toEqual([k("list/a/1"), k("list/a/2")])
        expect(yield* list("list/a")).toEqual([k("list/a"), k("list/a/1"), k("list/a/2"), k("list/ab")])
        expect(yield* list("list/")).toEqual(
          [k("list/a"), k("list/a/1"), k("list/a/2"), k("list/ab"), k("list/b/x/y")]
        )
        expect(yield* list("list/b/x")).toEqual([k("list/b/x/y")])
        expect(yield* list("list/zzz")).toEqual([])
        expect(yield* list("nothing-here/")).toEqual([])
        const everything = yield* Effect.map(Stream.runCollect(store.list()), Chunk.toReadonlyArray)
        expect(everything).toEqual(expect.arrayContaining([k("list/a"), k("list/b/x/y")]))
      }))

    it.effect("keeps a key and longer keys under it apart ('a' and 'a/b')", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        yield* store.put(k("nest"), "parent")
        yield* store.put(k("nest/child"), "child")
        expect(new TextDecoder().decode(yield* store.getBytes(k("nest")))).toBe("parent")
        expect(new TextDecoder().decode(yield* store.getBytes(k("nest/child")))).toBe("child")
        yield* store.delete(k("nest"))
        expect(yield* store.has(k("nest/child"))).toBe(true)
      }))

    it.effect("accepts keys with dots, dashes, @, = and spaces in segments", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        for (const key of ["odd/@acme/pkg=1.0", "odd/.hidden", "odd/with space", "odd/node_modules/x", "odd/a..b"]) {
          yield* store.put(k(key), key)
          expect(new TextDecoder().decode(yield* store.getBytes(k(key)))).toBe(key)
        }
        expect(yield* Effect.map(Stream.runCollect(store.list(k("odd/"))), Chunk.size)).toBe(5)
      }))

    it.effect("refuses bad keys with Invalid, naming the key and the problem", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        const cases: Array<[string, string]> = [
          ["", "must not be empty"],
          ["/abs/path", "must not start with '/'"],
          ["a/../b", "'..' segment"],
          ["..", "'..' segment"],
          ["a/./b", "'.' segment"],
          ["a//b", "empty segment"],
          ["trailing/", "must not end with '/'"],
          ["colon:key", "\":\""],
          ["dollar$key", "\"$\""],
          ["back\\slash", "\"\\\\\""],
          ["query?x", "\"?\""],
          ["x".repeat(1025), "limit is 1024"]
        ]
        for (const [key, problem] of cases) {
          const error = yield* expectFailure(store.put(key, "x"), "Invalid")
          expect(error.message).toContain(problem)
          expect(error.message).toContain(JSON.stringify(key).slice(0, 20))
          expect(error.method).toBe("put")
          yield* expectFailure(store.get(key), "Invalid")
          yield* expectFailure(store.stat(key), "Invalid")
          yield* expectFailure(store.has(key), "Invalid")
          yield* expectFailure(store.delete(key), "Invalid")
        }
        const listed = yield* expectFailure(Stream.runCollect(store.list("../up")), "Invalid")
        expect(listed.message).toContain("'..' segment")
        expect(listed.method).toBe("list")
      }))

    it.effect("answers NotFound for a missing key everywhere", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        const missing = k("missing/value")
        const error = yield* expectFailure(store.get(missing), "NotFound")
        expect(error.key).toBe(missing)
        expect(error.message).toContain(missing)
        expect(error.isRetryable).toBe(false)
        yield* expectFailure(store.stat(missing), "NotFound")
        yield* expectFailure(store.getBytes(missing), "NotFound")
        yield* expectFailure(Stream.runCollect(store.stream(missing)), "NotFound")
        expect(yield* store.has(missing)).toBe(false)
      }))

    it.effect("a failing body stream fails put with its own error and leaves the old value", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        yield* store.put(k("keep"), "old value")
        const failing = Stream.concat(
          Stream.fromIterable([patternBytes(largeSize, 3)]),
          Stream.fail({ _tag: "UploadAborted" as const })
        )
        const result = yield* Effect.either(store.put(k("keep"), failing))
        expect(result).toEqual(Either.left({ _tag: "UploadAborted" }))
        expect(new TextDecoder().decode(yield* store.getBytes(k("keep")))).toBe("old value")
        // A new key that fails its first write never appears.
        yield* Effect.either(store.put(k("never"), failing))
        expect(yield* store.has(k("never"))).toBe(false)
      }))

    it.effect("writes different keys concurrently", () =>
      Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        const keys = Array.from({ length: 12 }, (_, i) => k(`par/${i}`))
        yield* Effect.forEach(keys, (key, i) => store.put(key, patternBytes(2000 + i, i + 1)), { concurrency: "unbounded" })
        for (const [i, key] of keys.entries()) {
          expect(sameBytes(yield* store.getBytes(key), patternBytes(2000 + i, i + 1))).toBe(true)
        }
      }))
  })
}
