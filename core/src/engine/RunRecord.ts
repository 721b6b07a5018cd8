/**
 * How a run lives in the StateStore: one document per run holding the run (with its jobs and
 * their submissions, as the run lifecycle works on them) plus the engine's own bookkeeping —
 * a pending stop request, when a pending run is due for resubmission, and which submissions
 * were already handed to a runner (so a replica that takes over resumes instead of
 * resubmitting).
 */
import { Effect, Schema } from "effect"
import { Run } from "../domain/Run.ts"
import { StateStore, type StateStoreError, type StoredDocument } from "../ports/StateStore.ts"

const StopRequest = Schema.Struct({ abort: Schema.Boolean })

export const RunRecord = Schema.Struct({
  run: Run,
  stopRequest: Schema.optional(StopRequest).pipe(Schema.fromKey("stop_request")),
  wakeAt: Schema.optional(Schema.Number).pipe(Schema.fromKey("wake_at")),
  submittedToRunner: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] }).pipe(
    Schema.fromKey("submitted_to_runner")
  )
})
export type RunRecord = typeof RunRecord.Type

const decode = Schema.decodeUnknown(RunRecord)
export const encodeRecord = Schema.encodeSync(RunRecord)

/** A run row decoded, with the version to write it back against. */
export interface LoadedRun {
  readonly row: StoredDocument
  readonly record: RunRecord
}

/** Decodes a stored run; a malformed one is a defect (the store holds only what we wrote). */
export const decodeRow = (row: StoredDocument): Effect.Effect<LoadedRun> =>
  decode(row.doc).pipe(
    Effect.map((record) => ({ row, record })),
    Effect.orDieWith((e) => new Error(`run ${row.id} has a malformed record: ${e.message}`))
  )

export const loadRun = (id: string): Effect.Effect<LoadedRun, StateStoreError, StateStore> =>
  Effect.flatMap(StateStore, (store) => Effect.flatMap(store.runs.get(id), decodeRow))

export const loadRunByName = (project: string, name: string): Effect.Effect<LoadedRun, StateStoreError, StateStore> =>
  Effect.flatMap(StateStore, (store) => Effect.flatMap(store.runs.getByName(project, name), decodeRow))

/**
 * Changes a run record without holding its lease (a stop request from the API): re-reads and
 * retries when the engine wrote in between, so neither write is lost.
 */
export const modifyRun = (
  id: string,
  f: (record: RunRecord) => RunRecord
): Effect.Effect<RunRecord, StateStoreError, StateStore> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    for (let attempt = 0; ; attempt++) {
      const { row, record } = yield* loadRun(id)
      const next = f(record)
      const result = yield* store.runs
        .update(id, { status: next.run.status, doc: encodeRecord(next) }, { expectedVersion: row.version })
        .pipe(Effect.either)
      if (result._tag === "Right") return next
      if (result.left.reason !== "Conflict" || attempt >= 20) return yield* Effect.fail(result.left)
    }
  })
