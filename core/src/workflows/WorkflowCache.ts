/**
 * The workflow cache in the blob store: `workflow-cache/<project>/<key>` names the run that did
 * a job of that cache key (written when the job ends done), and `workflow-cache-runs/<project>/
 * <run id>/<key>` indexes the entries by run, so that deleting a run removes the entries that
 * point at it (and their blobs) without reading every entry of the project.
 */
import { Effect, Option, Schema, Stream } from "effect"
import type { BlobStore, BlobStoreError } from "../ports/BlobStore.ts"

export interface CacheEntry {
  readonly runName: string
  readonly runId: string
  readonly jobName: string
}

const EntryJson = Schema.parseJson(Schema.Struct({ run_name: Schema.String, run_id: Schema.String, job_name: Schema.String }))

const entryKey = (project: string, key: string) => `workflow-cache/${project}/${key}`
const runPrefix = (project: string, runId: string) => `workflow-cache-runs/${project}/${runId}/`

const isNotFound = (e: BlobStoreError) => e.reason === "NotFound"

/** The entry of a cache key; `None` when there is none (or it is unreadable: then the job runs again). */
export const readCacheEntry = (blobs: BlobStore, project: string, key: string): Effect.Effect<Option.Option<CacheEntry>, BlobStoreError> =>
  blobs.getBytes(entryKey(project, key)).pipe(
    Effect.flatMap((bytes) => Schema.decodeUnknown(EntryJson)(new TextDecoder().decode(bytes)).pipe(Effect.option)),
    Effect.map(Option.map((e) => ({ runName: e.run_name, runId: e.run_id, jobName: e.job_name }))),
    Effect.catchIf(isNotFound, () => Effect.succeedNone)
  )

/** Records that `entry`'s run did the job of cache key `key` (the index first, so that a delete always finds it). */
export const writeCacheEntry = (blobs: BlobStore, project: string, key: string, entry: CacheEntry): Effect.Effect<void, BlobStoreError> =>
  Effect.zipRight(
    blobs.put(`${runPrefix(project, entry.runId)}${key}`, new Uint8Array(0)),
    blobs.put(entryKey(project, key), Schema.encodeSync(EntryJson)({ run_name: entry.runName, run_id: entry.runId, job_name: entry.jobName }), { contentType: "application/json" })
  )

/**
 * Removes the cache entries that point at a run (a later run of the same key may have replaced
 * an entry: that one stays) and the run's index. Called when the run is deleted.
 */
export const forgetRunCacheEntries = (blobs: BlobStore, project: string, runId: string): Effect.Effect<void, BlobStoreError> =>
  Stream.runForEach(blobs.list(runPrefix(project, runId)), (indexKey) =>
    Effect.gen(function* () {
      const key = indexKey.slice(runPrefix(project, runId).length)
      const entry = yield* readCacheEntry(blobs, project, key)
      if (Option.isSome(entry) && entry.value.runId === runId) {
        yield* blobs.delete(entryKey(project, key)).pipe(Effect.catchIf(isNotFound, () => Effect.void))
      }
      yield* blobs.delete(indexKey).pipe(Effect.catchIf(isNotFound, () => Effect.void))
    }))
