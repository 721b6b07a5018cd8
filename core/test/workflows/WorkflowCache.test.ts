// The workflow cache's entries by run: deleting a run's artifacts removes the cache entries that
// point at it and their index, and leaves an entry a later run of the same key wrote.
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Option, Stream } from "effect"
import { BlobStore, layerMemory } from "../../src/ports/BlobStore.ts"
import { deleteRunArtifacts } from "../../src/workflows/Artifacts.ts"
import { readCacheEntry, writeCacheEntry } from "../../src/workflows/WorkflowCache.ts"

describe("workflow cache entries", () => {
  it.effect("go with the run they point at", () =>
    Effect.gen(function*() {
      const blobs = yield* BlobStore
      yield* writeCacheEntry(blobs, "p", "k1", { runName: "a", runId: "run-a", jobName: "a-0-0" })
      yield* writeCacheEntry(blobs, "p", "k2", { runName: "a", runId: "run-a", jobName: "a-0-0" })
      yield* writeCacheEntry(blobs, "p", "k3", { runName: "b", runId: "run-b", jobName: "b-0-0" })
      // A later run of k2 replaced run-a's entry: deleting run-a leaves it.
      yield* writeCacheEntry(blobs, "p", "k2", { runName: "c", runId: "run-c", jobName: "c-0-0" })
      expect(Option.getOrThrow(yield* readCacheEntry(blobs, "p", "k1")).runId).toBe("run-a")

      yield* deleteRunArtifacts(blobs, "p", "run-a")
      expect(yield* readCacheEntry(blobs, "p", "k1")).toEqual(Option.none())
      expect(Option.getOrThrow(yield* readCacheEntry(blobs, "p", "k2")).runId).toBe("run-c")
      expect(Option.getOrThrow(yield* readCacheEntry(blobs, "p", "k3")).runId).toBe("run-b")
      const keys = Chunk.toReadonlyArray(yield* Stream.runCollect(blobs.list("workflow-cache")))
      expect([...keys].sort()).toEqual([
        "workflow-cache-runs/p/run-b/k3",
        "workflow-cache-runs/p/run-c/k2",
        "workflow-cache/p/k2",
        "workflow-cache/p/k3"
      ])
    }).pipe(Effect.provide(layerMemory)))
})
