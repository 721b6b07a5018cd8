// The idle instances of each project as `runs/get_plan` read them lately, kept until the store
// reports a change to any instance (`watch`: at once for this server's own writes, on the
// database's notification for another replica's) and for at most `INSTANCE_CACHE_TTL_MS` in any
// case. A plan only shows them: the engine, which places jobs, reads the rows itself.
import { Context, Effect, Layer } from "effect"
import { StateStore, type StateStoreError, type StoredDocument } from "../ports/StateStore.ts"

/** The longest a project's idle list is used without the store saying an instance changed. */
export const INSTANCE_CACHE_TTL_MS = 2_000
/** The most projects kept; past it the list starts over. */
const MAX_PROJECTS = 1_000

export class InstanceCache extends Context.Tag("@dstack-ts/core/server/InstanceCache")<
  InstanceCache,
  {
    /** `store.instances.list({ projects: [project], statuses: ["idle"] })`, from memory when read lately. */
    readonly idle: (project: string) => Effect.Effect<ReadonlyArray<StoredDocument>, StateStoreError>
  }
>() {}

export const layer: Layer.Layer<InstanceCache, never, StateStore> = Layer.scoped(
  InstanceCache,
  Effect.gen(function* () {
    const store = yield* StateStore
    const lists = new Map<string, { readonly at: number; readonly rows: ReadonlyArray<StoredDocument> }>()
    // Counts the instance changes reported; a read is remembered only if none came meanwhile.
    let changes = 0
    yield* store.watch((change) => {
      if (change.kind !== "instance") return
      changes++
      lists.clear()
    })
    return {
      idle: (project) =>
        Effect.suspend(() => {
          const now = Date.now()
          const hit = lists.get(project)
          if (hit !== undefined && now - hit.at < INSTANCE_CACHE_TTL_MS) return Effect.succeed(hit.rows)
          const readAt = changes
          return Effect.tap(store.instances.list({ projects: [project], statuses: ["idle"] }), (rows) =>
            Effect.sync(() => {
              if (changes !== readAt) return
              if (lists.size >= MAX_PROJECTS) lists.clear()
              lists.set(project, { at: now, rows })
            })
          )
        })
    }
  })
)
