/**
 * The instance reconcile pass: settles instances that a server stopped in the middle of its work
 * left `busy` or `provisioning` with nobody left to move them on (a `kill -9` after an instance
 * was placed but before its job's worker wrote that it was, or after a run finished but before
 * its instance was given back), as upstream's instance processing does for busy instances
 * without an active job and provisioning ones past their deadline:
 *
 * - `busy` with no unfinished job on it: idle again when its runner answers (a backend that
 *   makes one instance per job terminates it), else terminated (an SSH fleet host is flagged
 *   unreachable instead); the idle sweep then ends it when its idle duration is over.
 * - `provisioning` that nobody creates any more (the creation's lease ran out): with provisioning
 *   data, idle when its runner answers, terminated once the provisioning timeout has passed;
 *   without (the backend never answered the dead server), terminated at once with the reason
 *   (the backend may hold a machine the server never heard of: it is said in the log).
 * - an SSH fleet host left `provisioning` goes back to `pending`, where the fleet processor
 *   provisions it again.
 *
 * An instance whose job is being placed right now (a job of an active run, by that name, whose
 * latest submission is unfinished and on no instance yet) is left for the next pass: its worker
 * may be about to write that the job is on it. Each instance is settled under a lease on its
 * row, so replicas on one database never settle the same instance at once.
 */
import { Effect, Either, Option, Schema } from "effect"
import { Instance } from "../domain/Instance.ts"
import { JobProvisioningData } from "../domain/Job.ts"
import { isJobStatusFinished, JobStatus } from "../domain/Status.ts"
import { decodeDocument, type StateStoreError, type StateStoreService, type StoredDocument } from "../ports/StateStore.ts"
import { errorMessage } from "./internal.ts"
import { REMOTE_BACKEND } from "./RemoteAccess.ts"

export interface ReconcileOptions {
  readonly store: StateStoreService
  /** Names this replica in instance leases. */
  readonly owner: string
  /** The statuses of runs whose jobs may hold an instance. */
  readonly activeRunStatuses: ReadonlyArray<string>
  /** An instance whose row changed less than this long ago is left for a later pass. */
  readonly graceMs: number
  /** How long a runner may take to answer on a new instance. */
  readonly provisioningTimeoutMs: number
  /** Whether the runner of an instance of the project answers its health check now. */
  readonly runnerAnswers: (project: string, pd: JobProvisioningData) => Effect.Effect<boolean>
  /** Gives a busy instance back to idle (the instance pool's `release`). */
  readonly release: (instanceId: string) => Effect.Effect<void>
  /** Terminates an instance at its backend and records why (the instance pool's `terminate`). */
  readonly terminate: (project: string, instanceId: string, pd: JobProvisioningData, reason: string) => Effect.Effect<void>
}

/** What one pass did, by instance id (for logs and tests). */
export interface ReconcileOutcome {
  readonly settled: ReadonlyArray<{ readonly id: string; readonly was: string; readonly action: "idle" | "terminated" | "pending" }>
}

/** Of a run's document, only what tells which instances its jobs hold. */
const RunJobs = Schema.Struct({
  run: Schema.Struct({
    jobs: Schema.Array(Schema.Struct({
      job_spec: Schema.Struct({ job_name: Schema.String }),
      job_submissions: Schema.Array(Schema.Struct({
        status: JobStatus,
        instance_id: Schema.optional(Schema.NullOr(Schema.String))
      }))
    }))
  })
})
const decodeRunJobs = Schema.decodeUnknownEither(RunJobs)
const readInstance = decodeDocument("instance", Instance)
const decodeProvisioning = Schema.decodeUnknownOption(JobProvisioningData)

/** Which instances the active runs' jobs hold, and which jobs (by project and name) are being placed. */
export interface Holders {
  readonly instances: ReadonlySet<string>
  readonly placing: ReadonlySet<string>
  /** Projects with an active run whose document could not be read: their instances are left alone. */
  readonly unread: ReadonlySet<string>
}

const placingKey = (project: string, jobName: string) => `${project}\u0000${jobName}`

/** The instances held and the jobs being placed, from active runs' documents. */
export const holdersOf = (runs: ReadonlyArray<{ readonly project: string; readonly doc: unknown }>): Holders => {
  const instances = new Set<string>()
  const placing = new Set<string>()
  const unread = new Set<string>()
  for (const { doc, project } of runs) {
    const read = decodeRunJobs(doc)
    // A run document this pass cannot read might hold any instance of its project: those are
    // left alone (the run's own worker reports the document).
    if (Either.isLeft(read)) {
      unread.add(project)
      continue
    }
    for (const job of read.right.run.jobs) {
      for (const sub of job.job_submissions) {
        if (!isJobStatusFinished(sub.status) && sub.instance_id != null) instances.add(sub.instance_id)
      }
      const latest = job.job_submissions.at(-1)
      if (latest !== undefined && !isJobStatusFinished(latest.status) && latest.instance_id == null) placing.add(placingKey(project, job.job_spec.job_name))
    }
  }
  return { instances, placing, unread }
}

/** Whether an instance row is one the pass should look at now: busy or provisioning, unleased, settled for `graceMs`. */
export const isCandidate = (row: StoredDocument, now: number, graceMs: number): boolean =>
  (row.status === "busy" || row.status === "provisioning") &&
  (row.lease === null || row.lease.expiresAt.getTime() <= now) &&
  now - row.updatedAt.getTime() >= graceMs

export const make = (options: ReconcileOptions) => {
  const { store, owner } = options

  const write = (row: StoredDocument, token: string, patch: Partial<ConstructorParameters<typeof Instance>[0]>, instance: Instance) =>
    store.instances.update(row.id, {
      status: patch.status ?? instance.status,
      doc: { ...(row.doc as object), ...Schema.encodeSync(Instance)(new Instance({ ...instance, ...patch })) }
    }, { lease: token })

  /** Settles one orphaned instance under the lease `token`; answers what became of it. */
  const settle = (row: StoredDocument, token: string, instance: Instance): Effect.Effect<"idle" | "terminated" | "pending" | undefined, StateStoreError> =>
    Effect.gen(function* () {
      const pd = decodeProvisioning((row.doc as Record<string, unknown>).provisioning_data)
      if (row.status === "provisioning" && instance.backend === REMOTE_BACKEND) {
        yield* write(row, token, { status: "pending" }, instance)
        return "pending"
      }
      if (Option.isNone(pd)) {
        const why = row.status === "busy"
          ? "its record has no provisioning data, so its runner cannot be asked"
          : "its creation was cut short: the server that asked the backend for it stopped before the backend answered"
        yield* Effect.logError(`instance ${instance.name} (${instance.backend}) ${row.status} with no job: ${why}; marked terminated without asking the backend; check the backend for a machine left running`)
        yield* write(row, token, { status: "terminated", jobName: undefined, terminationReason: "error", terminationReasonMessage: why }, instance)
        return "terminated"
      }
      const answers = yield* options.runnerAnswers(instance.projectName, pd.value)
      if (answers) {
        if (row.status === "busy") yield* options.release(row.id)
        else yield* write(row, token, { status: "idle", jobName: undefined, lastJobProcessedAt: new Date() }, instance)
        return "idle"
      }
      if (row.status === "provisioning" && Date.now() - instance.created.getTime() < options.provisioningTimeoutMs) return undefined
      const reason = row.status === "busy"
        ? "unreachable: its runner did not answer once its job had ended"
        : "provisioning_timeout: its runner did not answer in time"
      yield* options.terminate(instance.projectName, row.id, pd.value, reason)
      return "terminated"
    })

  /** One pass over every busy and provisioning instance. */
  const pass: Effect.Effect<ReconcileOutcome, StateStoreError> = Effect.gen(function* () {
    const settled: Array<ReconcileOutcome["settled"][number]> = []
    const now = Date.now()
    const candidates = (yield* store.instances.list({ statuses: ["busy", "provisioning"] })).filter((row) => isCandidate(row, now, options.graceMs))
    if (candidates.length === 0) return { settled }
    const projects = [...new Set(candidates.map((row) => row.project))]
    // Read after the instances: a job placed between the two reads is seen on its instance.
    const runs = yield* Effect.forEach(projects, (project) =>
      Effect.map(store.runs.listDocs({ projects: [project], statuses: options.activeRunStatuses }), (rows) => rows.map((row) => ({ project, doc: row.doc }))))
    const holders = holdersOf(runs.flat())
    for (const candidate of candidates) {
      if (holders.instances.has(candidate.id) || holders.unread.has(candidate.project)) continue
      const read = yield* readInstance(candidate).pipe(Effect.either)
      if (Either.isLeft(read)) {
        yield* Effect.logError(`instance reconcile: ${read.left.message}`)
        continue
      }
      const instance = read.right
      if (instance.jobName !== undefined && holders.placing.has(placingKey(candidate.project, instance.jobName))) continue
      const got = yield* store.instances.claim({ filter: { ids: [candidate.id], statuses: [candidate.status] }, owner, leaseMs: 60_000 })
      if (got.length === 0) continue
      const row = got[0]
      const token = row.lease!.token
      // The row as claimed: changed since the list (a worker's write), it is left for the next pass.
      const outcome = row.version !== candidate.version
        ? Either.right(undefined)
        : yield* settle(row, token, instance).pipe(Effect.either)
      yield* store.instances.release(row.id, token).pipe(Effect.ignore)
      if (Either.isLeft(outcome)) {
        yield* Effect.logWarning(`instance reconcile: ${instance.name}: ${errorMessage(outcome.left)}`)
        continue
      }
      if (outcome.right !== undefined) {
        yield* Effect.logInfo(`instance ${instance.name} was ${row.status} with no job on it: now ${outcome.right}`)
        settled.push({ id: row.id, was: row.status, action: outcome.right })
      }
    }
    return { settled }
  })

  return { pass }
}
