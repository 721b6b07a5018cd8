// The runs the API read lately (runs/get, pages of runs/list), kept until the store reports a
// change to them (`watch`: at once for this server's own writes, on the database's notification
// for another replica's) and for at most `RUN_CACHE_TTL_MS` in any case, the bound should a
// notification never arrive. A read it can answer from memory is an Effect already resolved
// (as of the call), so the router answers such a request without a fiber. Only reads that answer a client go through it: the
// engine works on the rows themselves, with their versions and leases.
import { Context, Effect, Layer } from "effect"
import { StateStore, type DocumentBody, type DocumentFilter, type Page, type StateStoreError, type StoredDocument } from "../ports/StateStore.ts"

/** The longest a cached run is served without the store saying it changed. */
export const RUN_CACHE_TTL_MS = 2_000
/** The most runs kept; the oldest entry makes way for a new one. */
const MAX_RUNS = 2_000
/** The most list pages kept (each at most 1,000 runs); past it the oldest makes way. */
const MAX_PAGES = 16

export class RunCache extends Context.Tag("@dstack-ts/core/server/RunCache")<
  RunCache,
  {
    /** `store.runs.get`, from memory when the run was read lately and has not changed since. */
    readonly get: (id: string) => Effect.Effect<StoredDocument, StateStoreError>
    /** `store.runs.getByName`, likewise. */
    readonly getByName: (project: string, name: string) => Effect.Effect<StoredDocument, StateStoreError>
    /**
     * `getByName` where a miss is no error: the live run of that name, or undefined when the
     * project has none — an answer remembered too, until any run changes.
     */
    readonly findByName: (project: string, name: string) => Effect.Effect<StoredDocument | undefined, StateStoreError>
    /**
     * `store.runs.listDocs`, from memory when the same page was read lately and no run changed
     * since (any run: a write may move a run into or out of any page).
     */
    readonly listDocs: (filter: DocumentFilter, page: Page) => Effect.Effect<ReadonlyArray<DocumentBody>, StateStoreError>
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
    // Names known to have no live run, and list pages, each with the `changes` it was read at:
    // valid only while no run changed since.
    const absent = new Map<string, { readonly at: number; readonly changes: number }>()
    const pages = new Map<string, { readonly at: number; readonly changes: number; readonly rows: ReadonlyArray<DocumentBody> }>()
    yield* store.watch((change) => {
      if (change.kind !== "run") return
      changes++
      rows.delete(change.id)
      absent.clear()
      pages.clear()
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

    const byName = (project: string, name: string, now: number): StoredDocument | undefined => {
      const hit = fresh(names.get(`${project}\u0000${name}`), now)
      return hit !== undefined && !hit.deleted && hit.project === project && hit.name === name ? hit : undefined
    }

    const pageOf = (key: string, now: number): ReadonlyArray<DocumentBody> | undefined => {
      const hit = pages.get(key)
      return hit !== undefined && hit.changes === changes && now - hit.at < RUN_CACHE_TTL_MS ? hit.rows : undefined
    }

    // A hit is answered as of the call, with an Effect already resolved; a miss reads when run.
    const getByName = (project: string, name: string): Effect.Effect<StoredDocument, StateStoreError> => {
      const hit = byName(project, name, Date.now())
      if (hit !== undefined) return Effect.succeed(hit)
      return Effect.suspend(() => {
        const now = Date.now()
        const readAt = changes
        return Effect.tap(store.runs.getByName(project, name), (row) =>
          Effect.sync(() => {
            remember(row, readAt, now)
            if (names.size >= MAX_RUNS) names.clear()
            names.set(`${project}\u0000${name}`, row.id)
          })
        )
      })
    }

    return {
      findByName: (project, name) =>
        Effect.suspend(() => {
          const key = `${project}\u0000${name}`
          const none = absent.get(key)
          if (none !== undefined && none.changes === changes && Date.now() - none.at < RUN_CACHE_TTL_MS) return Effect.succeed(undefined)
          const readAt = changes
          const now = Date.now()
          return getByName(project, name).pipe(
            Effect.catchIf(
              (e) => e.reason === "NotFound",
              () =>
                Effect.sync(() => {
                  if (changes === readAt) {
                    if (absent.size >= MAX_RUNS) absent.clear()
                    absent.set(key, { at: now, changes: readAt })
                  }
                  return undefined
                })
            )
          )
        }),
      listDocs: (filter, page) =>
        Effect.suspend(() => {
          const key = JSON.stringify([filter, page])
          const now = Date.now()
          const hit = pageOf(key, now)
          if (hit !== undefined) return Effect.succeed(hit)
          const readAt = changes
          return Effect.tap(store.runs.listDocs(filter, page), (rows) =>
            Effect.sync(() => {
              if (changes !== readAt) return
              pages.delete(key)
              if (pages.size >= MAX_PAGES) pages.delete(pages.keys().next().value!)
              pages.set(key, { at: now, changes: readAt, rows })
            })
          )
        }),
      get: (id) => {
        const hit = fresh(id, Date.now())
        if (hit !== undefined) return Effect.succeed(hit)
        return Effect.suspend(() => {
          const now = Date.now()
          const readAt = changes
          return Effect.tap(store.runs.get(id), (row) => Effect.sync(() => remember(row, readAt, now)))
        })
      },
      getByName
    }
  })
)
