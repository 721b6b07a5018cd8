// The `s3` blob store against the S3 stand-in (test/support/s3-standin.ts: a real HTTP server on
// loopback that checks SigV4 signatures and keeps objects on disk): the BlobStore conformance
// suite, listing through continuation pages, the options by name, and the unhappy paths —
// wrong credentials, a missing bucket, a wrong region, an endpoint that is down.
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Layer, Stream } from "effect"
import { createHash } from "node:crypto"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { BlobStore } from "@dstack-ts/core"
import { testBlobStore } from "@dstack-ts/core/testing"
import { startS3Standin } from "../../../test/support/s3-standin.ts"
import plugin, { UnstorageBlobStore } from "../src/index.ts"

const BUCKET = "dstack-blobs"
// Five keys per ListObjectsV2 page, so that every listing of the suite goes through continuations.
const standin = await startS3Standin({ buckets: [BUCKET], maxKeysPerPage: 5 })
afterAll(() => standin.close())

const s3 = {
  bucket: BUCKET,
  endpoint: standin.endpoint,
  region: standin.region,
  accessKeyId: standin.accessKeyId,
  secretAccessKey: standin.secretAccessKey
}
const byName = {
  bucket: BUCKET,
  endpoint: standin.endpoint,
  region: standin.region,
  access_key_id: standin.accessKeyId,
  secret_access_key: standin.secretAccessKey
}

testBlobStore("UnstorageBlobStore.layerS3 on the S3 stand-in (64 KiB chunks)", UnstorageBlobStore.layerS3({ ...s3, chunkSize: 64 * 1024 }), {
  largeSize: 300_001
})

testBlobStore(
  "the plugin's `s3` store by name on the S3 stand-in (base prefix, default chunks)",
  plugin.blobStores!.s3({ ...byName, base: "by-name/blobs" }),
  { largeSize: 1_000_001 }
)

/** The error a layer fails to build with. */
const buildError = (layer: Layer.Layer<BlobStore.BlobStore, BlobStore.BlobStoreError>) =>
  Effect.flip(Effect.scoped(Layer.build(layer)))

describe("the s3 blob store", () => {
  it.effect("keeps objects under its base prefix and lists past a page of keys", () =>
    Effect.gen(function*() {
      const store = yield* BlobStore.BlobStore
      expect(store.reach).toBe("shared")
      const keys = Array.from({ length: 23 }, (_, i) => `paged/k${String(i).padStart(2, "0")}`)
      yield* Effect.forEach(keys, (k) => store.put(k, k), { concurrency: 4, discard: true })
      const before = standin.operations.get("ListObjectsV2") ?? 0
      const listed = yield* Effect.map(Stream.runCollect(store.list("paged/")), Chunk.toReadonlyArray)
      expect(listed).toEqual(keys)
      // 23 manifests at 5 keys a page: 5 pages.
      expect((standin.operations.get("ListObjectsV2") ?? 0) - before).toBe(5)
      const objects = standin.keys(BUCKET).filter((k) => k.startsWith("tenant-a/"))
      expect(objects).toContain("tenant-a/m/paged/k00$m")
      expect(objects.every((k) => k.startsWith("tenant-a/m/") || k.startsWith("tenant-a/c/"))).toBe(true)
    }).pipe(Effect.provide(plugin.blobStores!.s3({ ...byName, base: "tenant-a", chunk_size: 1000 }))))

  it.effect("refuses a wrong secret with PermissionDenied (SignatureDoesNotMatch), naming the option to check", () =>
    Effect.gen(function*() {
      const error = yield* buildError(UnstorageBlobStore.layerS3({ ...s3, secretAccessKey: "not-the-secret" }))
      expect(error.reason).toBe("PermissionDenied")
      expect(error.message).toContain("403 SignatureDoesNotMatch")
      expect(error.message).toContain("secret_access_key")
    }))

  it.effect("refuses an unknown access key with PermissionDenied (InvalidAccessKeyId)", () =>
    Effect.gen(function*() {
      const error = yield* buildError(UnstorageBlobStore.layerS3({ ...s3, accessKeyId: "AKIAUNKNOWN" }))
      expect(error.reason).toBe("PermissionDenied")
      expect(error.message).toContain("403 InvalidAccessKeyId")
      expect(error.message).toContain("access_key_id")
    }))

  it.effect("refuses a missing bucket at start, naming it (not an empty store)", () =>
    Effect.gen(function*() {
      const error = yield* buildError(UnstorageBlobStore.layerS3({ ...s3, bucket: "no-such-bucket" }))
      expect(error.reason).toBe("Invalid")
      expect(error.message).toContain("404 NoSuchBucket")
      expect(error.message).toContain("\"no-such-bucket\"")
    }))

  it.effect("refuses a wrong region (the signature's scope)", () =>
    Effect.gen(function*() {
      const error = yield* buildError(UnstorageBlobStore.layerS3({ ...s3, region: "eu-west-3" }))
      expect(error.message).toContain("AuthorizationHeaderMalformed")
      expect(error.message).toContain("eu-west-3")
    }))

  it.effect("fails with Transport when the endpoint is down, at start and later", () =>
    Effect.gen(function*() {
      const down = yield* Effect.promise(() => startS3Standin({ buckets: [BUCKET] }))
      yield* Effect.promise(() => down.close())
      const error = yield* buildError(UnstorageBlobStore.layerS3({ ...s3, endpoint: down.endpoint }))
      expect(error.reason).toBe("Transport")
      expect(error.message).toContain(`cannot reach the S3 endpoint ${down.endpoint}`)
      // Node says ECONNREFUSED, Deno "Connection refused".
      expect(error.message).toMatch(/ECONNREFUSED|Connection refused/)

      // Up at start, gone later: reads and writes fail with Transport, never NotFound.
      const flaky = yield* Effect.promise(() => startS3Standin({ buckets: [BUCKET] }))
      yield* Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        yield* store.put("here", "value")
        yield* Effect.promise(() => flaky.close())
        for (const failed of [store.get("here"), store.has("here"), store.put("there", "x"), Stream.runDrain(store.list(""))]) {
          const e = yield* Effect.flip(failed as Effect.Effect<unknown, BlobStore.BlobStoreError>)
          expect(e.reason, e.message).toBe("Transport")
        }
      }).pipe(
        Effect.provide(UnstorageBlobStore.layerS3({ ...s3, endpoint: flaky.endpoint })),
        Effect.ensuring(Effect.promise(() => flaky.close()))
      )
    }))

  it.effect("fails with Transport when the endpoint cuts a read off midway", () =>
    Effect.gen(function*() {
      const cutting = yield* Effect.promise(() => startS3Standin({ buckets: [BUCKET] }))
      yield* Effect.gen(function*() {
        const store = yield* BlobStore.BlobStore
        yield* store.put("long", new Uint8Array(200_000).fill(7))
        cutting.faults.cutGetsAfter = 1000
        const e = yield* Effect.flip(store.getBytes("long"))
        expect(e.reason, e.message).toBe("Transport")
        expect(e.message).toContain("broke off GET")
        cutting.faults.cutGetsAfter = undefined
        expect((yield* store.getBytes("long")).length).toBe(200_000)
      }).pipe(
        Effect.provide(UnstorageBlobStore.layerS3({ ...s3, endpoint: cutting.endpoint, chunkSize: 64 * 1024 })),
        Effect.ensuring(Effect.promise(() => cutting.close()))
      )
    }))

  it.effect("validates its options, naming each bad one", () =>
    Effect.gen(function*() {
      const without = (key: string) => Object.fromEntries(Object.entries(byName).filter(([k]) => k !== key))
      const cases: Array<[Record<string, unknown>, string]> = [
        [without("access_key_id"), "`access_key_id` is required"],
        [{ ...byName, secret_access_key: "" }, "secret_access_key"],
        [without("bucket"), "`bucket` is required"],
        [without("region"), "`region` is required"],
        [{ ...byName, endpoint: "s3.amazonaws.com" }, "endpoint: must be an http:// or https:// URL"],
        [{ ...byName, base: "/abs" }, "base: must not start or end with '/'"],
        [{ ...byName, chunk_size: 0 }, "chunk_size"],
        [{ ...byName, accessKeyId: "x" }, "unknown key `accessKeyId`; did you mean `access_key_id`?"]
      ]
      for (const [options, problem] of cases) {
        const error = yield* buildError(plugin.blobStores!.s3(options))
        expect(error.reason).toBe("Invalid")
        expect(error.message).toContain("invalid options of the s3 blob store")
        expect(error.message).toContain(problem)
      }
    }))

  it("says who sees each store's values", async () => {
    const reach = (layer: Layer.Layer<BlobStore.BlobStore, BlobStore.BlobStoreError>) =>
      Effect.runPromise(Effect.map(BlobStore.BlobStore, (store) => store.reach).pipe(Effect.provide(layer)))
    expect(await reach(UnstorageBlobStore.layerMemory())).toBe("process")
    expect(await reach(BlobStore.layerMemory)).toBe("process")
    expect(await reach(UnstorageBlobStore.layerS3(s3))).toBe("shared")
  })
})

// Bytes live outside the JS heap: Node counts them in `arrayBuffers`, Deno only in `external`.
v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void
const used = () => {
  const m = process.memoryUsage()
  return m.heapUsed + Math.max(m.external ?? 0, m.arrayBuffers ?? 0)
}
/**
 * Memory in use once what earlier tests left is gone. A collection releases the bytes of the
 * ArrayBuffers it finds dead only later (off the main thread, finished by the next collection),
 * so one `gc()` just before reading leaves them counted: a baseline taken so once read 118 MiB
 * of external memory that the next sample no longer had.
 */
const settled = Effect.promise(async () => {
  let least = Number.POSITIVE_INFINITY
  for (let i = 0; i < 5; i++) {
    gc()
    gc()
    await new Promise((resolve) => setTimeout(resolve, 20))
    least = Math.min(least, used())
  }
  return least
})

describe("the s3 blob store streams", () => {
  // 2 MiB objects, so that what the store holds at a time (the chunk it fills, two being sent,
  // each with fetch's own copy of its body, then one read back) is far below the 128 MiB blob.
  const CHUNK = 2 * 1024 * 1024
  it.effect("moves 128 MiB through the stand-in in 2 MiB objects, holding a few objects at a time, never the blob", () =>
    Effect.gen(function*() {
      const TOTAL = 128 * 1024 * 1024
      const PIECE = 256 * 1024
      const store = yield* BlobStore.BlobStore
      const baseline = yield* settled
      let peak = baseline
      let samples = 0
      const sample = () => {
        if (++samples % 8 === 0) {
          // The second collection finishes releasing the bytes of what the first found dead.
          gc()
          gc()
          peak = Math.max(peak, used())
        }
      }
      const sent = createHash("sha256")
      const body = Stream.range(0, TOTAL / PIECE - 1, 1).pipe(
        Stream.map((i) => {
          // Fresh and different from the others, so that a dropped or reordered piece changes the digest.
          const piece = new Uint8Array(PIECE)
          new DataView(piece.buffer).setUint32(0, i)
          piece.fill(i & 0xff, 4)
          sent.update(piece)
          sample()
          return piece
        })
      )
      const result = yield* store.put("big/value.bin", body)
      expect(result.size).toBe(TOTAL)
      const received = createHash("sha256")
      let size = 0
      yield* Stream.runForEach(store.stream("big/value.bin"), (bytes) =>
        Effect.sync(() => {
          received.update(bytes)
          size += bytes.length
          sample()
        }))
      expect(size).toBe(TOTAL)
      expect(received.digest("hex")).toBe(sent.digest("hex"))
      expect(standin.keys(BUCKET).filter((k) => k.startsWith("streaming/c/"))).toHaveLength(TOTAL / CHUNK)
      const grew = peak - baseline
      console.log(`128 MiB through the S3 stand-in: memory grew by at most ${(grew / 1024 / 1024).toFixed(1)} MiB`)
      // About 11 MiB (five or six chunks) is usual, on a busy machine too; a store that held the
      // blob would grow by 128 MiB or more.
      expect(grew).toBeLessThan(32 * 1024 * 1024)
      yield* store.delete("big/value.bin")
      expect(standin.keys(BUCKET).filter((k) => k.startsWith("streaming/"))).toEqual([])
    }).pipe(Effect.provide(UnstorageBlobStore.layerS3({ ...s3, base: "streaming", chunkSize: CHUNK }))), 120_000)
})
