// Waking a run's worker: a change the worker has been told of already is not news. The writer's
// `wake` names the version it stored, and the change feed announces the same write (on PGlite
// before the write returns, on PostgreSQL later): either way the worker gets one signal for it,
// and the row written rides on it (the writer's, or the feed's for a write of this process).
// Against the embedded store (its change feed).
import { describe, expect, it } from "@effect/vitest"
import { Effect, Queue } from "effect"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import * as RunClaims from "../../src/engine/RunClaims.ts"
import type { Signal } from "../../src/engine/RunWorker.ts"
import { StateStore } from "../../src/ports/StateStore.ts"

const changedSignals = (taken: ReadonlyArray<Signal>) => taken.filter((s): s is Extract<Signal, { _tag: "Changed" }> => s._tag === "Changed")

const setUp = Effect.gen(function* () {
  const store = yield* StateStore
  const seen: Array<Signal> = []
  const claims = yield* RunClaims.make({
    store,
    owner: "test",
    leaseMs: 30_000,
    activeStatuses: ["submitted", "running"],
    // A worker that only records what wakes it.
    work: (_runId, _lease, handle) => Queue.take(handle.signals).pipe(Effect.tap((s) => Effect.sync(() => seen.push(s))), Effect.forever)
  })
  const id = crypto.randomUUID()
  yield* store.runs.insert({ id, project: "main", name: `r-${id.slice(0, 8)}`, status: "running", doc: { n: 0 } })
  yield* claims.acquire(id)
  yield* Effect.sleep("50 millis")
  seen.length = 0
  return { store, claims, id, seen }
})

describe("RunClaims", () => {
  it.scopedLive("a write announced by its writer's wake and by the change feed wakes the worker once, with the writer's row", () =>
    Effect.gen(function* () {
      const { store, claims, id, seen } = yield* setUp
      const row = yield* store.runs.update(id, { doc: { n: 1 } })
      // The writer's wake, with the row it wrote; the feed's notice of the same version comes too.
      yield* claims.acquire(id, row.version, { version: row.version, record: undefined as never, row })
      yield* Effect.sleep("100 millis")
      const changed = changedSignals(seen)
      expect(changed.length).toBe(1)
      // Whichever came first brings the row: the writer's wake, or the feed's notice of a write of this process.
      expect(changed[0]!.known?.row ?? changed[0]!.row).toEqual(row)
    }).pipe(Effect.provide(EmbeddedStateStore.layerMemory())), 60_000)

  it.scopedLive("a write of this process that nobody wakes the worker for reaches it from the change feed with its row", () =>
    Effect.gen(function* () {
      const { store, id, seen } = yield* setUp
      const rows = [yield* store.runs.update(id, { doc: { n: 1 } })]
      yield* Effect.sleep("100 millis")
      rows.push(yield* store.runs.update(id, { doc: { n: 2 } }))
      yield* Effect.sleep("100 millis")
      // One signal per write, each with the row of its version: the worker reads neither.
      expect(changedSignals(seen).map((s) => s.row)).toEqual(rows)
      // Inside a transaction the row may yet be rolled back: that notice comes bare (the worker reads).
      const inTx = yield* store.withTransaction(store.runs.update(id, { doc: { n: 3 } }))
      yield* Effect.sleep("100 millis")
      const last = changedSignals(seen).at(-1)!
      expect([seen.length, last.row, last.known]).toEqual([3, undefined, undefined])
      expect(inTx.version).toBe(rows[1]!.version + 1)
    }).pipe(Effect.provide(EmbeddedStateStore.layerMemory())), 60_000)

  it.scopedLive("a bare wake always counts, and a newer version after an announced one does too", () =>
    Effect.gen(function* () {
      const { store, claims, id, seen } = yield* setUp
      yield* claims.acquire(id)
      yield* claims.acquire(id)
      const row = yield* store.runs.update(id, { doc: { n: 1 } })
      yield* Effect.sleep("100 millis")
      yield* claims.acquire(id, row.version)
      const newer = yield* store.runs.update(id, { doc: { n: 2 } })
      yield* Effect.sleep("100 millis")
      yield* claims.acquire(id, newer.version)
      yield* Effect.sleep("50 millis")
      // Two bare wakes, one for each of the two writes (their second announcements dropped).
      expect(changedSignals(seen).length).toBe(4)
    }).pipe(Effect.provide(EmbeddedStateStore.layerMemory())), 60_000)
})
