// The unstorage BlobStore: the conformance suite over the memory and fs drivers, plus what only
// this implementation promises (chunk layout, no orphan chunks, manifest-last visibility,
// mapping of driver errors).
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Either, Fiber, Layer, Stream } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createStorage, type Storage } from "unstorage"
import memoryDriver from "unstorage/drivers/memory"
import { UnstorageBlobStore } from "../src/index.ts"
import { BlobStore } from "@dstack-ts/core"
import { patternBytes, testBlobStore } from "@dstack-ts/core/testing"

const base = mkdtempSync(join(tmpdir(), "dstack-blob-"))
afterAll(() => rmSync(base, { recursive: true, force: true }))

testBlobStore("UnstorageBlobStore.layerMemory (1000-byte chunks)", UnstorageBlobStore.layerMemory({ chunkSize: 1000 }), {
  largeSize: 250_003
})
testBlobStore("UnstorageBlobStore.layerMemory (default chunks)", UnstorageBlobStore.layerMemory())
testBlobStore("UnstorageBlobStore.layerFs", UnstorageBlobStore.layerFs({ base: join(base, "fs"), chunkSize: 64 * 1024 }), {
  largeSize: 1_000_000
})

const withStore = <A, E>(
  storage: Storage,
  chunkSize: number,
  f: (store: BlobStore.BlobStore) => Effect.Effect<A, E>
) => Effect.flatMap(UnstorageBlobStore.make(storage, { chunkSize }), f)

const chunkKeys = (storage: Storage) =>
  Effect.promise(() => storage.getKeys("c")).pipe(Effect.map((keys) => keys.filter((k) => k.startsWith("c:"))))

describe("UnstorageBlobStore layout", () => {
  it.effect("splits a value into fixed-size chunks plus one manifest", () => {
    const storage = createStorage({ driver: memoryDriver() })
    return withStore(storage, 100, (store) =>
      Effect.gen(function*() {
        yield* store.put("a/b", patternBytes(250))
        const keys = yield* Effect.promise(() => storage.getKeys())
        expect(keys.filter((k) => k.startsWith("m:"))).toEqual(["m:a:b$m"])
        const chunks = yield* chunkKeys(storage)
        expect(chunks).toHaveLength(3)
        const sizes = yield* Effect.forEach(chunks.sort(), (k) =>
          Effect.promise(() => storage.getItemRaw(k)).pipe(Effect.map((v) => (v as Uint8Array).length)))
        expect(sizes.sort((x, y) => x - y)).toEqual([50, 100, 100])
      }))
  })

  it.effect("an overwrite and a delete leave no orphan chunks", () => {
    const storage = createStorage({ driver: memoryDriver() })
    return withStore(storage, 100, (store) =>
      Effect.gen(function*() {
        yield* store.put("k", patternBytes(1000))
        expect(yield* chunkKeys(storage)).toHaveLength(10)
        yield* store.put("k", patternBytes(201))
        expect(yield* chunkKeys(storage)).toHaveLength(3)
        yield* store.put("k", new Uint8Array(0))
        expect(yield* chunkKeys(storage)).toHaveLength(0)
        yield* store.put("k", patternBytes(150))
        yield* store.delete("k")
        expect(yield* Effect.promise(() => storage.getKeys())).toEqual([])
      }))
  })

  it.effect("a failed write removes the chunks it had written", () => {
    const storage = createStorage({ driver: memoryDriver() })
    return withStore(storage, 100, (store) =>
      Effect.gen(function*() {
        const body = Stream.concat(Stream.succeed(patternBytes(950)), Stream.fail("boom"))
        expect(yield* Effect.either(store.put("k", body))).toEqual(Either.left("boom"))
        expect(yield* Effect.promise(() => storage.getKeys())).toEqual([])
      }))
  })

  it.effect("an interrupted write removes the chunks it had written", () => {
    const storage = createStorage({ driver: memoryDriver() })
    return withStore(storage, 100, (store) =>
      Effect.gen(function*() {
        const stalled = yield* Deferred.make<void>()
        const body = Stream.concat(
          Stream.succeed(patternBytes(250)),
          Stream.drain(Stream.fromEffect(Deferred.succeed(stalled, undefined))).pipe(Stream.concat(Stream.never))
        )
        const fiber = yield* Effect.fork(store.put("k", body))
        yield* Deferred.await(stalled)
        expect(yield* chunkKeys(storage)).toHaveLength(2)
        yield* Fiber.interrupt(fiber)
        expect(yield* Effect.promise(() => storage.getKeys())).toEqual([])
      }))
  })

  it.effect("a failed write from a ReadableStream removes the chunks it had written", () => {
    const storage = createStorage({ driver: memoryDriver() })
    return withStore(storage, 100, (store) =>
      Effect.gen(function*() {
        let sent = 0
        const readable = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent++ < 5) controller.enqueue(patternBytes(190, sent))
            else controller.error(new Error("client went away"))
          }
        })
        const error = yield* Effect.flip(store.put("k", readable))
        expect(error.message).toContain("client went away")
        expect(yield* Effect.promise(() => storage.getKeys())).toEqual([])
      }))
  })

  it.effect("an interrupted write from a ReadableStream removes its chunks and cancels the stream", () => {
    const storage = createStorage({ driver: memoryDriver() })
    return withStore(storage, 100, (store) =>
      Effect.gen(function*() {
        const stalled = yield* Deferred.make<void>()
        let cancelled = false
        let sent = 0
        const readable = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent++ < 3) controller.enqueue(patternBytes(100, sent))
            else Deferred.unsafeDone(stalled, Effect.void) // and never enqueue again
          },
          cancel() {
            cancelled = true
          }
        }, { highWaterMark: 0 })
        const fiber = yield* Effect.fork(store.put("k", readable))
        yield* Deferred.await(stalled)
        yield* Effect.promise(() => new Promise((r) => setTimeout(r, 10)))
        expect((yield* chunkKeys(storage)).length).toBeGreaterThan(0)
        yield* Fiber.interrupt(fiber)
        expect(yield* Effect.promise(() => storage.getKeys())).toEqual([])
        expect(cancelled).toBe(true)
      }))
  })

  it.effect("a driver failure in the middle of a write fails put with its reason and leaves no chunks", () => {
    const inner = memoryDriver()
    let writes = 0
    const storage = createStorage({
      driver: {
        ...inner,
        name: "full-disk",
        setItemRaw: (key: string, value: unknown, opts: unknown) => {
          if (key.startsWith("c:") && ++writes === 3) {
            return Promise.reject(Object.assign(new Error("ENOSPC: no space left on device"), { code: "ENOSPC" }))
          }
          return inner.setItemRaw!(key, value, opts as never)
        }
      }
    })
    return withStore(storage, 100, (store) =>
      Effect.gen(function*() {
        for (const body of [patternBytes(1000), Stream.fromIterable(Array.from({ length: 20 }, (_, i) => patternBytes(50, i + 1)))]) {
          writes = 0
          const error = yield* Effect.flip(store.put("k", body))
          expect(error.reason).toBe("Unknown")
          expect(error.message).toContain("no space left on device")
          expect(error.key).toBe("k")
          expect(yield* Effect.promise(() => storage.getKeys())).toEqual([])
        }
      }))
  })

  it.effect("overlaps chunk writes, with at most two in flight", () => {
    const inner = memoryDriver()
    let inFlight = 0
    let most = 0
    const storage = createStorage({
      driver: {
        ...inner,
        name: "slow",
        setItemRaw: async (key: string, value: unknown, opts: unknown) => {
          inFlight++
          most = Math.max(most, inFlight)
          await new Promise((r) => setTimeout(r, 5))
          inFlight--
          return inner.setItemRaw!(key, value, opts as never)
        }
      }
    })
    return withStore(storage, 100, (store) =>
      Effect.gen(function*() {
        const bytes = patternBytes(2000, 9)
        yield* store.put("whole", bytes)
        expect(most).toBeGreaterThan(1)
        expect(most).toBeLessThanOrEqual(2)
        most = 0
        yield* store.put("streamed", Stream.fromIterable(Array.from({ length: 40 }, (_, i) => bytes.subarray(i * 50, i * 50 + 50))))
        expect(most).toBeGreaterThan(1)
        expect(most).toBeLessThanOrEqual(2)
        expect([...(yield* store.getBytes("whole"))]).toEqual([...bytes])
        expect([...(yield* store.getBytes("streamed"))]).toEqual([...bytes])
      }))
  })

  it.effect("a value becomes visible only once complete; readers keep the old value meanwhile", () => {
    const storage = createStorage({ driver: memoryDriver() })
    return withStore(storage, 100, (store) =>
      Effect.gen(function*() {
        yield* store.put("v", "old")
        const seen: Array<string> = []
        const body = Stream.fromIterable([0, 1, 2]).pipe(
          Stream.mapEffect((i) =>
            Effect.gen(function*() {
              // Runs while put is pulling the body, after some chunks are already stored.
              seen.push(new TextDecoder().decode(yield* store.getBytes("v")))
              seen.push(String(yield* store.has("fresh")))
              return patternBytes(120, i + 1)
            })
          )
        )
        yield* store.put("v", body)
        yield* store.put("fresh", Stream.tap(Stream.succeed(patternBytes(10)), () =>
          Effect.map(store.has("fresh"), (has) => {
            seen.push(`fresh:${has}`)
          })))
        expect(seen).toEqual(["old", "false", "old", "false", "old", "false", "fresh:false"])
        expect((yield* store.stat("v")).size).toBe(360)
        expect(yield* store.has("fresh")).toBe(true)
      }))
  })

  it.effect("a chunk removed under a reader fails the stream with NotFound", () => {
    const storage = createStorage({ driver: memoryDriver() })
    return withStore(storage, 100, (store) =>
      Effect.gen(function*() {
        yield* store.put("r", patternBytes(300))
        const blob = yield* store.get("r")
        const [chunk] = (yield* chunkKeys(storage)).filter((k) => k.endsWith(".2"))
        yield* Effect.promise(() => storage.removeItem(chunk))
        const result = yield* Effect.either(Stream.runCollect(blob.body))
        expect(Either.isLeft(result) && result.left.reason).toBe("NotFound")
        expect(Either.isLeft(result) && result.left.message).toContain("chunk 2")
      }))
  })

  it.effect("an unreadable manifest is Invalid on read, and a new write replaces it", () => {
    const storage = createStorage({ driver: memoryDriver() })
    return withStore(storage, 100, (store) =>
      Effect.gen(function*() {
        yield* Effect.promise(() => storage.setItem("m:bad$m", "{\"version\":1,\"size\":-4}"))
        const result = yield* Effect.either(store.stat("bad"))
        expect(Either.isLeft(result) && result.left.reason).toBe("Invalid")
        expect(Either.isLeft(result) && result.left.message).toContain("manifest of \"bad\"")
        yield* store.put("bad", "good now")
        expect(new TextDecoder().decode(yield* store.getBytes("bad"))).toBe("good now")
      }))
  })

  it.effect("driver errors map to reasons, keeping the cause", () =>
    Effect.gen(function*() {
      const refusing = createStorage({
        driver: {
          name: "refusing",
          hasItem: () => Promise.reject(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:6379"), { code: "ECONNREFUSED" })),
          getItem: () => Promise.reject(Object.assign(new Error("EACCES: permission denied"), { code: "EACCES" })),
          getKeys: () => Promise.reject(Object.assign(new Error("timed out"), { code: "ETIMEDOUT" })),
          setItemRaw: () => Promise.reject(new Error("disk on fire"))
        }
      })
      const store = yield* UnstorageBlobStore.make(refusing)
      const has = yield* Effect.flip(store.has("x"))
      expect([has.reason, has.isRetryable, has.message]).toEqual([
        "Transport",
        true,
        "has of \"x\" failed: connect ECONNREFUSED 127.0.0.1:6379"
      ])
      expect((has.cause as Error).message).toContain("ECONNREFUSED")
      expect((yield* Effect.flip(store.stat("x"))).reason).toBe("PermissionDenied")
      expect((yield* Effect.flip(Stream.runCollect(store.list("")))).reason).toBe("Timeout")
      const put = yield* Effect.flip(store.put("x", "bytes"))
      expect([put.reason, put.isRetryable]).toEqual(["Unknown", false])
    }))

  it.effect("refuses a chunk size that is not a positive integer", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(UnstorageBlobStore.make(createStorage(), { chunkSize: 0 }))
      expect(String(exit)).toContain("chunkSize must be a positive integer, got 0")
    }))

  it.effect("layerFs keeps manifests and chunks in separate directories under base", () =>
    Effect.gen(function*() {
      const dir = join(base, "layout")
      yield* Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        yield* store.put("x/y", patternBytes(10))
      }).pipe(Effect.provide(UnstorageBlobStore.layerFs({ base: dir })))
      const { readdirSync } = yield* Effect.promise(() => import("node:fs"))
      expect(readdirSync(dir).sort()).toEqual(["chunks", "manifests", "tmp"])
      expect(readdirSync(join(dir, "manifests", "x"))).toEqual(["y$m"])
      // Manifests are staged in tmp and renamed into place: nothing stays behind there.
      expect(readdirSync(join(dir, "tmp"))).toEqual([])
      // A second layer over the same directory sees the value.
      const back = yield* Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        return yield* Effect.map(Stream.runCollect(store.stream("x/y")), Chunk.size)
      }).pipe(Effect.provide(Layer.fresh(UnstorageBlobStore.layerFs({ base: dir }))))
      expect(back).toBe(1)
    }))

  it.effect("layerFs: a value overwritten again and again is always readable, never an empty manifest", () =>
    Effect.gen(function*() {
      const store = yield* BlobStore.BlobStore
      yield* store.put("busy/key", patternBytes(100))
      let done = false
      const writer = Effect.gen(function*() {
        for (let i = 0; i < 100; i++) yield* store.put("busy/key", patternBytes(100 + (i % 7)), { metadata: { i: String(i) } })
        done = true
      })
      const reader = Effect.gen(function*() {
        let reads = 0
        while (!done || reads < 100) {
          const stat = yield* store.stat("busy/key")
          expect(stat.size).toBeGreaterThanOrEqual(100)
          reads++
        }
        return reads
      })
      const [, reads] = yield* Effect.all([writer, reader], { concurrency: 2 })
      expect(reads).toBeGreaterThanOrEqual(100)
    }).pipe(Effect.provide(UnstorageBlobStore.layerFs({ base: join(base, "busy") }))), 120_000)
})
