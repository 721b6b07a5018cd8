// The sweep of pending stack frames over the real embedded state store and a blob store:
// frames pending since before the cutoff go with their blobs; committed frames, recent
// pending frames and other frames' blobs stay.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Stream, Chunk } from "effect"
import { UnstorageBlobStore } from "@dstack-ts/blob-unstorage"
import { BlobStore } from "../../src/ports/BlobStore.ts"
import { StateStore, type StackFrameRecord } from "../../src/ports/StateStore.ts"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { sweepPendingFrames } from "../../src/stacks/server/PendingFrames.ts"
import { framePrefix } from "../../src/stacks/server/StackRoutes.ts"

const layers = Layer.merge(EmbeddedStateStore.layerMemory(), UnstorageBlobStore.layerMemory())

const frame = (id: string, name: string): StackFrameRecord => ({
  id,
  owner: "alice",
  name,
  message: null,
  params: {},
  attachments: [{ description: null, params: {}, contentType: "application/octet-stream", application: "bytes", metadata: {}, size: null, blobKey: null, digest: null }],
  status: "pending",
  createdBy: "alice",
  createdAt: new Date(),
  committedAt: null
})

/** A frame with its one attachment uploaded, as the routes do it. */
const uploaded = (id: string, name: string) =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const blobs = yield* BlobStore
    yield* store.stacks.ensure("alice", name, "private")
    yield* store.stacks.insertFrame(frame(id, name))
    const blobKey = `${framePrefix({ owner: "alice", name }, id)}0`
    const put = yield* blobs.put(blobKey, `bytes of ${id}`)
    yield* store.stacks.setAttachmentBlob(id, 0, { size: put.size, blobKey, digest: put.digest })
    return blobKey
  })

const keys = Effect.flatMap(BlobStore, (b) => Effect.map(Stream.runCollect(b.list("")), Chunk.toReadonlyArray))

describe("sweepPendingFrames", () => {
  it.effect("removes frames pending since before the cutoff with their blobs, and nothing else", () =>
    Effect.gen(function*() {
      const store = yield* StateStore
      const stale = yield* uploaded("stale", "data/a")
      const staleNested = yield* uploaded("stale-nested", "deep/name/x")
      const kept = yield* uploaded("committed", "data/a")
      yield* store.stacks.commitFrame("committed", "done")
      // Nothing is older than a cutoff in the past.
      expect(yield* sweepPendingFrames(new Date(Date.now() - 60_000))).toBe(0)
      expect(yield* keys).toHaveLength(3)

      expect(yield* sweepPendingFrames(new Date(Date.now() + 60_000))).toBe(2)
      expect((yield* Effect.flip(store.stacks.getFrame("stale"))).reason).toBe("NotFound")
      expect((yield* Effect.flip(store.stacks.getFrame("stale-nested"))).reason).toBe("NotFound")
      expect((yield* store.stacks.getFrame("committed")).status).toBe("committed")
      expect(yield* keys).toEqual([kept])
      expect(yield* keys).not.toContain(stale)
      expect(yield* keys).not.toContain(staleNested)
      // The stack and its head are untouched.
      expect((yield* store.stacks.get("alice", "data/a")).head).toBe("committed")
      // A second sweep finds nothing.
      expect(yield* sweepPendingFrames(new Date(Date.now() + 60_000))).toBe(0)
    }).pipe(Effect.provide(layers)))

  it.effect("never removes a committed frame, even when asked to by id", () =>
    Effect.gen(function*() {
      const store = yield* StateStore
      yield* uploaded("c1", "s")
      yield* store.stacks.commitFrame("c1", null)
      expect(yield* store.stacks.deletePendingFrame("c1")).toBe(false)
      expect(yield* store.stacks.deletePendingFrame("no-such-frame")).toBe(false)
      expect((yield* store.stacks.getFrame("c1")).status).toBe("committed")
      expect(yield* store.stacks.listPendingFrames(new Date(Date.now() + 60_000), 10)).toEqual([])
    }).pipe(Effect.provide(layers)))

  it.effect("works through more pending frames than one batch", () =>
    Effect.gen(function*() {
      const store = yield* StateStore
      yield* store.stacks.ensure("alice", "many", "private")
      yield* Effect.forEach(Array.from({ length: 230 }, (_, i) => `p${i}`), (id) => store.stacks.insertFrame(frame(id, "many")), { discard: true })
      expect(yield* sweepPendingFrames(new Date(Date.now() + 60_000))).toBe(230)
      expect(yield* store.stacks.listPendingFrames(new Date(Date.now() + 60_000), 1000)).toEqual([])
    }).pipe(Effect.provide(layers)))
})
