/**
 * How a run lives in the StateStore: one document per run holding the run (with its jobs and
 * their submissions, as the run lifecycle works on them) plus the engine's own bookkeeping —
 * a pending stop request, when a pending run is due for resubmission, and which submissions
 * were already handed to a runner (so a replica that takes over resumes instead of
 * resubmitting).
 */
import { Effect, Schema } from "effect"
import { wireShape } from "../api/WireShape.ts"
import { Job, JobSpec, JobSubmission } from "../domain/Job.ts"
import { Run, runCost, RunSpec } from "../domain/Run.ts"
import { StateStore, type StateStoreError, type StoredDocument } from "../ports/StateStore.ts"

const StopRequest = Schema.Struct({ abort: Schema.Boolean })

export const RunRecord = Schema.Struct({
  run: Run,
  stopRequest: Schema.optional(StopRequest).pipe(Schema.fromKey("stop_request")),
  wakeAt: Schema.optional(Schema.Number).pipe(Schema.fromKey("wake_at")),
  submittedToRunner: Schema.optionalWith(Schema.Array(Schema.String), { default: () => [] }).pipe(
    Schema.fromKey("submitted_to_runner")
  ),
  /** Submissions of service replicas the autoscaler asked to stop (drained already): the worker stops them as `scaled_down`. */
  scaleDown: Schema.optional(Schema.Array(Schema.String)).pipe(Schema.fromKey("scale_down"))
})
export type RunRecord = typeof RunRecord.Type

const decode = Schema.decodeUnknown(RunRecord)
const encodeRun = Schema.encode(Run)

// Encoding a record is most of a worker step's CPU if done whole each time: the run spec and the
// job specs (configurations, resource ranges) never change once submitted, and a transition
// builds new objects only for what it changes. So the parts are encoded once per object (by
// identity) and the rest, a handful of scalars, each time. `core/test/engine/RunRecord.test.ts`
// checks the result equals the schema's own encoding and fails when Run or Job gain a field.
const memoized = <A extends object, I>(encode: (a: A) => I): ((a: A) => I) => {
  const cache = new WeakMap<A, I>()
  return (a) => {
    let encoded = cache.get(a)
    if (encoded === undefined) {
      encoded = encode(a)
      cache.set(a, encoded)
    }
    return encoded
  }
}
const encodeRunSpec = memoized(Schema.encodeSync(RunSpec))
const encodeJobSpec = memoized(Schema.encodeSync(JobSpec))
const encodeSubmission = memoized(Schema.encodeSync(JobSubmission))
const { runSpec: _runSpec, jobs: _jobs, latestJobSubmission: _latest, ...runScalars } = Run.fields
const encodeRunScalars = Schema.encodeSync(Schema.Struct(runScalars))
const { run: _run, ...recordRest } = RunRecord.fields
const encodeRecordRest = Schema.encodeSync(Schema.Struct(recordRest))

/** The fields encoded by parts below: a field added to Run or Job must be added there too. */
export const ENCODED_BY_PARTS = { run: ["runSpec", "jobs", "latestJobSubmission"], job: ["jobSpec", "jobSubmissions"] } as const

const encodeJob = (job: Job): typeof Job.Encoded => ({
  job_spec: encodeJobSpec(job.jobSpec),
  job_submissions: job.jobSubmissions.map(encodeSubmission)
})

const encodeRunByParts = (run: Run): typeof Run.Encoded => ({
  ...encodeRunScalars(run),
  run_spec: encodeRunSpec(run.runSpec),
  jobs: run.jobs.map(encodeJob),
  ...(run.latestJobSubmission === undefined ? {} : { latest_job_submission: encodeSubmission(run.latestJobSubmission) })
})

const encodeRecordOnly = (record: RunRecord): typeof RunRecord.Encoded => ({
  run: encodeRunByParts(record.run),
  ...encodeRecordRest(record)
})

/**
 * The key under which a stored record names the wire shape of its `run` (see WireShape.ts):
 * when it is this build's, the stored run is exactly what encoding it again would give, and
 * the API sends it without a decode/encode round trip. Decoding ignores the key.
 */
const WIRE_SHAPE_KEY = "run_wire_shape"
let runShape: string | undefined
const currentRunShape = (): string => (runShape ??= wireShape(Run))

/** The record as stored: its wire form, stamped with the wire shape of its run. */
export const encodeRecord = (record: RunRecord): typeof RunRecord.Encoded & { readonly [WIRE_SHAPE_KEY]: string } => ({
  ...encodeRecordOnly(record),
  [WIRE_SHAPE_KEY]: currentRunShape()
})

/** A run row decoded, with the version to write it back against. */
export interface LoadedRun {
  readonly row: StoredDocument
  readonly record: RunRecord
}

/**
 * A run record this process holds decoded, at the row version it was written as: handed from
 * the request that stored it to the worker that claims it, which then need not decode the row.
 */
export interface KnownRecord {
  readonly version: number
  readonly record: RunRecord
  /** The row as written, when the writer has it: a running worker then takes it instead of reading the run. */
  readonly row?: StoredDocument
}

/** Decodes a stored run; a malformed one is a defect (the store holds only what we wrote). */
export const decodeRow = (row: StoredDocument): Effect.Effect<LoadedRun> =>
  decode(row.doc).pipe(
    Effect.map((record) => ({ row, record })),
    Effect.orDieWith((e) => new Error(`run ${row.id} has a malformed record: ${e.message}`))
  )

/** The wire form of a run (`Run` encoded), as the API sends it. */
export type RunWire = typeof Run.Encoded

/** A run as the API shows it: its cost up to `now`. */
export const presentRun = (run: Run, now: number = Date.now()): Run =>
  new Run({ ...run, cost: runCost(run, now) }, { disableValidation: true })

const time = (v: unknown): number => (typeof v === "string" ? Date.parse(v) : Number.NaN)

/** `runCost` on the wire form: the same sum, in the same order, so the same number. */
const wireCost = (run: RunWire, now: number): number => {
  let total = 0
  for (const job of run.jobs ?? []) {
    for (const sub of job.job_submissions ?? []) {
      const price = sub.job_provisioning_data?.price
      if (price === undefined || price === null) continue
      const finished = sub.finished_at
      const end = finished === undefined || finished === null ? now : time(finished)
      const hours = Math.max(0, end - time(sub.submitted_at)) / 3_600_000
      total += price * hours
    }
  }
  return total
}

/**
 * `runWireOf` without an Effect, for a row written with this build's run schema: its stored run
 * with the cost at `now`; undefined for older rows (those need `runWireOf`'s decode).
 */
export const storedRunWire = (stored: unknown, now: number): RunWire | undefined => {
  const run = storedRun(stored)
  return run === undefined ? undefined : { ...run, cost: wireCost(run, now) }
}

/** `storedRunWire(stored, now).cost` without building the wire form. */
export const storedRunCost = (stored: unknown, now: number): number | undefined => {
  const run = storedRun(stored)
  return run === undefined ? undefined : wireCost(run, now)
}

const storedRun = (stored: unknown): RunWire | undefined => {
  const doc = stored as { readonly run?: RunWire; readonly [WIRE_SHAPE_KEY]?: unknown } | null
  return doc !== null && typeof doc === "object" && doc[WIRE_SHAPE_KEY] === currentRunShape() && typeof doc.run === "object" && doc.run !== null
    ? doc.run
    : undefined
}

/**
 * The run of a stored row as the API sends it (`presentRun`, encoded). A row written with this
 * build's run schema is answered from its stored JSON with only the cost recomputed; older rows
 * are decoded and encoded again.
 */
export const runWireOf = (row: Pick<StoredDocument, "id" | "doc">, now: number = Date.now()): Effect.Effect<RunWire> => {
  const wire = storedRunWire(row.doc, now)
  if (wire !== undefined) return Effect.succeed(wire)
  return decode(row.doc).pipe(
    Effect.flatMap((record) => encodeRun(presentRun(record.run, now))),
    Effect.orDieWith((e) => new Error(`run ${row.id} has a malformed record: ${e.message}`))
  )
}

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
): Effect.Effect<RunRecord, StateStoreError, StateStore> => Effect.map(modifyRunKnown(id, f), (known) => known.record)

/**
 * `modifyRun`, answering the version it wrote with the record (for `Engine.wake`); `read`, the
 * run as the caller just read it, is the first try's (a write over a newer version conflicts
 * and is made again on a fresh read).
 */
export const modifyRunKnown = (
  id: string,
  f: (record: RunRecord) => RunRecord,
  read?: LoadedRun
): Effect.Effect<KnownRecord, StateStoreError, StateStore> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    for (let attempt = 0; ; attempt++) {
      const { row, record } = attempt === 0 && read !== undefined ? read : yield* loadRun(id)
      const next = f(record)
      const result = yield* store.runs
        .update(id, { status: next.run.status, doc: encodeRecord(next) }, { expectedVersion: row.version })
        .pipe(Effect.either)
      if (result._tag === "Right") return { version: result.right.version, record: next, row: result.right }
      if (result.left.reason !== "Conflict" || attempt >= 20) return yield* Effect.fail(result.left)
    }
  })
