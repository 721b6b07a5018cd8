// Proves that the unstorage BlobStore streams: 200 MB pass through the fs driver in both
// directions while the process's memory (JS heap plus array buffers) stays far below that.
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import { createHash } from "node:crypto"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { UnstorageBlobStore } from "../src/index.ts"
import { BlobStore } from "@dstack-ts/core"

const TOTAL = 200 * 1024 * 1024
const PIECE = 256 * 1024
const base = mkdtempSync(join(tmpdir(), "dstack-blob-stream-"))
afterAll(() => rmSync(base, { recursive: true, force: true }))

// A full collection before each sample, so that what is measured is what the store keeps alive,
// not garbage the collector has not reached yet (Deno collects array buffers lazily: without
// this the peak is the whole 200 MB even though nothing holds it). Works on Node and Deno.
v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void

// Bytes live outside the JS heap: Node counts them in `arrayBuffers` (part of `external`),
// Deno only in `external`.
const used = () => {
  const m = process.memoryUsage()
  return m.heapUsed + Math.max(m.external ?? 0, m.arrayBuffers ?? 0)
}

describe("UnstorageBlobStore streaming", () => {
  it.effect("moves a generated 200 MB stream through the fs driver with bounded memory", () =>
    Effect.gen(function*() {
      const store = yield* BlobStore.BlobStore
      // Twice: the second collection finishes releasing the bytes of what the first found dead.
      gc()
      gc()
      const baseline = used()
      let peak = baseline
      let samples = 0
      const sample = () => {
        if (++samples % 8 === 0) {
          gc()
          gc()
          peak = Math.max(peak, used())
        }
      }

      // Each piece is fresh (the store may hold on to a piece until its chunk is full) and
      // differs from the others, so that a dropped or reordered piece changes the digest.
      const sent = createHash("sha256")
      // Chunk size 1: Stream.map maps a whole chunk at once, and the default would build 4096 pieces.
      const body = Stream.range(0, TOTAL / PIECE - 1, 1).pipe(
        Stream.map((i) => {
          const piece = new Uint8Array(PIECE)
          new DataView(piece.buffer).setUint32(0, i)
          piece.fill(i & 0xff, 4)
          sent.update(piece)
          sample()
          return piece
        })
      )
      const result = yield* store.put("big/value.bin", body, { contentType: "application/octet-stream" })
      const expected = sent.digest("hex")
      expect(result.size).toBe(TOTAL)
      expect(result.digest).toBe(expected)

      const afterPut = peak - baseline
      const received = createHash("sha256")
      let size = 0
      yield* Stream.runForEach(store.stream("big/value.bin"), (bytes) =>
        Effect.sync(() => {
          received.update(bytes)
          size += bytes.length
          sample()
        }))
      expect(size).toBe(TOTAL)
      expect(received.digest("hex")).toBe(expected)
      expect((yield* store.stat("big/value.bin")).digest).toBe(expected)

      const grew = peak - baseline
      console.log(`200 MB round trip: memory grew by at most ${(grew / 1024 / 1024).toFixed(1)} MB (put: ${(afterPut / 1024 / 1024).toFixed(1)} MB)`)
      // A few 8 MiB chunks in flight (filled, written, read back by the driver), far below 200 MB.
      expect(grew).toBeLessThan(64 * 1024 * 1024)
    }).pipe(Effect.provide(UnstorageBlobStore.layerFs({ base }))), 120_000)
})
