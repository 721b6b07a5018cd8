// The runs the API read lately (runs/get), kept until the store reports a change to them
// (`watch`: at once for this server's own writes, on the database's notification for another
// replica's) and for at most `RUN_CACHE_TTL_MS` in any case, the bound should a notification
// never arrive. Only reads that answer a client go through it: the engine works on the rows
// themselves, with their versions and leases.
import { Context, Effect, Layer } from "effect"
import { StateStore, type StateStoreError, type StoredDocument } from "../ports/StateStore.ts"

/** The longest a cached run is served without the store saying it changed. */
export const RUN_CACHE_TTL_MS = 2_000
/** The most runs kept; the oldest entry makes way for a new one. */
const MAX_RUNS = 2_000

export class RunCache extends Context.Tag("@dstack-ts/core/server/RunCache")<
  RunCache,
  {
    /** `store.runs.get`, from memory when the run was read lately and has not changed since. */
    readonly get: (id: string) => Effect.Effect<StoredDocument, StateStoreError>
    /** `store.runs.getByName`, likewise. */
    readonly getByName: (project: string, name: string) => Effect.Effect<StoredDocument, StateStoreError>
  }
>() {}

interface Cached {
  readonly row: StoredDocument
  readonly at: number
}

export const layer: Layer.Layer<RunCache, never, StateStore> = Layer.scoped(
  RunCache,
  Effect.gen(function* () {
    const store = yield* StateStore
    const rows = new Map<string, Cached>()
    // (project, name) → the id of the live run that had it when last read: only a hint, the
    // cached row itself must still be that live run.
    const names = new Map<string, string>()
    // Counts the run changes reported; a read is remembered only if none came meanwhile (a
    // read racing a write may have seen the old row).
    let changes = 0
    yield* store.watch((change) => {
      if (change.kind !== "run") return
      changes++
      rows.delete(change.id)
    })

    const fresh = (id: string | undefined, now: number): StoredDocument | undefined => {
      if (id === undefined) return undefined
      const hit = rows.get(id)
      return hit !== undefined && now - hit.at < RUN_CACHE_TTL_MS ? hit.row : undefined
    }

    const remember = (row: StoredDocument, readAt: number, now: number): void => {
      if (changes !== readAt) return
      rows.delete(row.id)
      if (rows.size >= MAX_RUNS) rows.delete(rows.keys().next().value!)
      rows.set(row.id, { row, at: now })
    }

    return {
      get: (id) =>
        Effect.suspend(() => {
          const now = Date.now()
          const hit = fresh(id, now)
          if (hit !== undefined) return Effect.succeed(hit)
          const readAt = changes
          return Effect.tap(store.runs.get(id), (row) => Effect.sync(() => remember(row, readAt, now)))
        }),
      getByName: (project, name) =>
        Effect.suspend(() => {
          const key = `${project}\u0000${name}`
          const now = Date.now()
          const hit = fresh(names.get(key), now)
          if (hit !== undefined && !hit.deleted && hit.project === project && hit.name === name) return Effect.succeed(hit)
          const readAt = changes
          return Effect.tap(store.runs.getByName(project, name), (row) =>
            Effect.sync(() => {
              remember(row, readAt, now)
              if (names.size >= MAX_RUNS) names.clear()
              names.set(key, row.id)
            })
          )
        })
    }
  })
)
