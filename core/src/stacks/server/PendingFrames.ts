/**
 * Cleanup of pushes that never finished: a frame stays `pending` from `frames/create` until
 * `frames/commit`; a client that dies in between leaves the frame row and whatever attachment
 * bytes it had uploaded. Frames pending for longer than the configured age are removed (row
 * first, only while still pending, then their blobs), by a sweep that `frames/create` starts
 * in the background at most once per interval.
 */
import { Clock, Context, Effect, Layer, Stream } from "effect"
import { BlobStore } from "../../ports/BlobStore.ts"
import { StateStore } from "../../ports/StateStore.ts"

/** The default age after which a pending frame is removed: 24 hours. */
export const DEFAULT_PENDING_FRAME_MAX_AGE_MS = 24 * 60 * 60 * 1000

/**
 * How long, in milliseconds, a frame may stay pending (created, not committed) before the
 * sweep removes it with its uploaded attachments. Override it by adding
 * `layerPendingFrameMaxAge(ms)` to the server's layers.
 */
export class PendingFrameMaxAge extends Context.Reference<PendingFrameMaxAge>()("@dstack-ts/core/stacks/PendingFrameMaxAge", {
  defaultValue: () => DEFAULT_PENDING_FRAME_MAX_AGE_MS
}) {}

/** Sets the age after which pending frames are removed, e.g. `layerPendingFrameMaxAge(3_600_000)`. */
export const layerPendingFrameMaxAge = (ms: number): Layer.Layer<PendingFrameMaxAge> => {
  if (!(Number.isFinite(ms) && ms > 0)) throw new RangeError(`the pending frame max age must be a positive number of milliseconds, got ${ms}`)
  return Layer.succeed(PendingFrameMaxAge, ms)
}

/** The blob key prefix of a frame's attachments (as StackRoutes writes them). */
const framePrefix = (owner: string, name: string, frameId: string) => `stacks/${owner}/${name.replaceAll("/", "~")}/${frameId}/`

const BATCH = 100

/**
 * Removes the frames pending since before `olderThan` and their attachment blobs; answers how
 * many it removed. A frame committed meanwhile is left alone (the row is deleted only while
 * pending, and its blobs only after that).
 */
export const sweepPendingFrames = (olderThan: Date) =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const blobs = yield* BlobStore
    let removed = 0
    for (;;) {
      const frames = yield* store.stacks.listPendingFrames(olderThan, BATCH)
      let removedNow = 0
      for (const frame of frames) {
        if (!(yield* store.stacks.deletePendingFrame(frame.id))) continue
        removedNow++
        yield* Stream.runForEach(blobs.list(framePrefix(frame.owner, frame.name, frame.id)), (key) => blobs.delete(key))
      }
      removed += removedNow
      if (frames.length < BATCH || removedNow === 0) return removed
    }
  })

// The last sweep per state store (so two servers in one process sweep each their own).
const lastSweep = new WeakMap<object, number>()

/**
 * Starts a sweep in the background when none ran in the last interval (a quarter of the max
 * age, at most 10 minutes); failures are logged, never reported to the caller.
 */
export const maybeSweepPendingFrames = Effect.gen(function*() {
  const store = yield* StateStore
  const maxAge = yield* PendingFrameMaxAge
  const now = yield* Clock.currentTimeMillis
  const interval = Math.min(maxAge / 4, 10 * 60 * 1000)
  const last = lastSweep.get(store)
  if (last !== undefined && now - last < interval) return
  lastSweep.set(store, now)
  const blobs = yield* BlobStore
  yield* sweepPendingFrames(new Date(now - maxAge)).pipe(
    Effect.tap((n) => (n > 0 ? Effect.logInfo(`removed ${n} stack frame(s) left pending for over ${maxAge} ms`) : Effect.void)),
    Effect.catchAll((e) => Effect.logWarning("sweeping pending stack frames failed", e)),
    Effect.provideService(StateStore, store),
    Effect.provideService(BlobStore, blobs),
    Effect.forkDaemon
  )
})
