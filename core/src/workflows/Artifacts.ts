/**
 * Where a job's artifacts live in the server's blob store: per run (by id) and job, a tar.gz of
 * the files and a JSON manifest (each file's path, size and SHA-256, as the runner measured
 * them). Kept by the engine when a job with `artifacts` ends done (RunnerFollower), read by the
 * `artifacts/*` routes and by dependent jobs, deleted with the run.
 */
import { Effect, Schema, Stream } from "effect"
import type { BlobStore, BlobStoreError } from "../ports/BlobStore.ts"
import { extractTarball } from "../repos/Tarball.ts"
import { forgetRunCacheEntries } from "./WorkflowCache.ts"

export const ArtifactFileWire = Schema.Struct({
  path: Schema.String,
  size: Schema.Number,
  sha256: Schema.String
})
export type ArtifactFileWire = typeof ArtifactFileWire.Type

export const ArtifactManifest = Schema.Struct({
  runName: Schema.propertySignature(Schema.String).pipe(Schema.fromKey("run_name")),
  jobName: Schema.propertySignature(Schema.String).pipe(Schema.fromKey("job_name")),
  /** The folders the job listed. */
  paths: Schema.Array(Schema.String),
  files: Schema.Array(ArtifactFileWire)
})
export type ArtifactManifest = typeof ArtifactManifest.Type

const prefixOf = (project: string, runId: string) => `artifacts/${project}/${runId}/`

/** The blob keys of one job's artifacts. */
export const artifactKeys = (project: string, runId: string, jobName: string) => ({
  archive: `${prefixOf(project, runId)}${jobName}.tar.gz`,
  manifest: `${prefixOf(project, runId)}${jobName}.json`
})

const decodeManifest = Schema.decodeUnknown(Schema.parseJson(ArtifactManifest))
const encodeManifest = Schema.encodeSync(Schema.parseJson(ArtifactManifest))

/** Stores a job's artifacts: the archive streamed in, then the manifest (which marks them complete). */
export const keepArtifacts = <E>(
  blobs: BlobStore,
  keys: ReturnType<typeof artifactKeys>,
  manifest: ArtifactManifest,
  archive: Stream.Stream<Uint8Array, E>
): Effect.Effect<void, BlobStoreError | E> =>
  Effect.gen(function* () {
    yield* blobs.put(keys.archive, archive, { contentType: "application/gzip" })
    yield* blobs.put(keys.manifest, new TextEncoder().encode(encodeManifest(manifest)), { contentType: "application/json" })
  })

/** The manifests of a run's jobs that kept artifacts, by job name order. */
export const listRunArtifacts = (blobs: BlobStore, project: string, runId: string): Effect.Effect<Array<ArtifactManifest>, BlobStoreError | Error> =>
  Effect.gen(function* () {
    const keys = yield* Stream.runCollect(blobs.list(prefixOf(project, runId)))
    const out: Array<ArtifactManifest> = []
    for (const key of keys) {
      if (!key.endsWith(".json")) continue
      const bytes = yield* blobs.getBytes(key)
      out.push(yield* decodeManifest(new TextDecoder().decode(bytes)).pipe(Effect.mapError((e) => new Error(`artifact manifest ${key} is unreadable: ${e.message}`))))
    }
    return out
  })

/**
 * Removes every artifact of a run, and the workflow cache entries that point at it (a cached
 * job whose run is gone runs again).
 */
export const deleteRunArtifacts = (blobs: BlobStore, project: string, runId: string): Effect.Effect<void, BlobStoreError> =>
  Effect.zipRight(
    forgetRunCacheEntries(blobs, project, runId),
    Stream.runForEach(blobs.list(prefixOf(project, runId)), (key) => blobs.delete(key))
  )

/**
 * Extracts a downloaded artifact archive (a tar.gz stream) into `dir`, refusing entries that
 * would land outside it.
 */
export const extractArtifacts = <E>(archive: Stream.Stream<Uint8Array, E>, dir: string) => extractTarball("artifacts", archive, dir)
