/**
 * The instance pool: the engine's side of the `instances` table. It takes an idle instance for
 * a job (under a lease, so two runs never get the same one, and only once its runner answers),
 * creates a new one from a backend offer, gives an instance back to idle when its job ends,
 * terminates broken ones and those idle past their idle duration. It also remembers what the
 * provisioning of many jobs at once would otherwise ask again and again: which runners reported
 * moments ago, and which projects had no idle instance a moment ago.
 */
import { Cause, Duration, Effect, Either, Fiber, Option, Schema } from "effect"
import { Instance, instanceIdleDeadline } from "../domain/Instance.ts"
import { JobProvisioningData } from "../domain/Job.ts"
import type { InstanceOffer } from "../domain/Offer.ts"
import type { Run } from "../domain/Run.ts"
import { BackendError, type InstanceConfiguration, type InstanceJob } from "../ports/Backend.ts"
import { decodeDocument, type DocumentPatch, type StateStoreError, type StateStoreService, type StoredDocument } from "../ports/StateStore.ts"
import type { ComputeService } from "./Compute.ts"
import type { ListedInstance } from "./Planner.ts"
import { errorMessage } from "./internal.ts"
import { REMOTE_BACKEND } from "./RemoteAccess.ts"
import { noteHealthy, waitHealthy } from "./RunnerSession.ts"
import { withRunner } from "./RunnerFollower.ts"

/** The lease an instance being created is inserted under; `held` until a write frees it. */
interface CreationLease {
  readonly id: string
  readonly token: string
  held: boolean
}

/** An instance that holds a job now. */
export interface Placement {
  readonly pd: JobProvisioningData
  readonly instanceId: string
}

export interface InstancePool {
  /**
   * Takes an idle instance (an offer with `instanceId`) for a job; none when it is taken or its
   * runner does not answer. `listed`: its row as the plan read it, taken in one write at that
   * version when its runner was heard from moments ago and nobody holds it.
   */
  readonly takeIdle: (offer: InstanceOffer, jobName: string, listed?: ListedInstance) => Effect.Effect<Option.Option<Placement>, StateStoreError>
  /** Creates an instance from a backend offer and records it as busy with the job. */
  readonly create: (project: string, offer: InstanceOffer, run: Run, jobName: string, job?: InstanceJob, onPending?: InstanceConfiguration["onPending"]) => Effect.Effect<Placement, StateStoreError | BackendError>
  /**
   * Creates the instances of a multi-node job together from a backend offer (the backend's
   * `createInstanceGroup`: all or nothing), one per rank of `jobNames` (the master first), and
   * records each as busy with its rank's job.
   */
  readonly createGroup: (project: string, offer: InstanceOffer, run: Run, jobNames: ReadonlyArray<string>, job: InstanceJob, onPending?: InstanceConfiguration["onPending"]) => Effect.Effect<ReadonlyArray<Placement>, StateStoreError | BackendError>
  /** Gives a busy instance back to idle (failures are logged: the instance then stays busy until terminated). */
  readonly release: (instanceId: string | undefined) => Effect.Effect<void>
  /** Terminates an instance at its backend and records why (failures are logged). */
  readonly terminate: (project: string, instanceId: string | undefined, pd: JobProvisioningData, reason: string) => Effect.Effect<void>
  /** Terminates the idle instances whose idle duration is over. */
  readonly terminateExpiredIdle: Effect.Effect<void, StateStoreError>
  /** Records that the runner of an instance reported just now: reusing it soon needs no health check. */
  readonly noteRunnerSeen: (instanceId: string) => void
  /**
   * Whether a plan in the project may skip looking up idle instances (one a moment ago found
   * none and none was released since), and what to call with the number the plan found.
   */
  readonly idleHint: (project: string) => { readonly skipIdle: boolean; readonly found: (idleInstances: number | undefined) => void }
}

export interface InstancePoolOptions {
  readonly store: StateStoreService
  readonly compute: ComputeService
  /** Names this replica in instance leases. */
  readonly owner: string
  /** An idle instance whose runner reported less than this long ago is reused without a health check. */
  readonly runnerFreshMs: number
  /** Seconds a new instance stays idle before it is terminated, unless the run says otherwise. */
  readonly defaultIdleDurationSeconds: number
  /**
   * How long the lease on an instance being created lasts unrenewed (renewed while the backend
   * works): once it runs out, the reconcile pass takes the instance for one nobody creates.
   * Default 30 s.
   */
  readonly creationLeaseMs?: number
}

/** How long a plan that found no idle instance in a project speaks for the next plans there. */
const NO_IDLE_TTL_MS = 250

const decodeInstance = Schema.decodeUnknown(Instance)
const readInstance = decodeDocument("instance", Instance)
const encodeInstance = Schema.encodeSync(Instance)
const decodeProvisioning = Schema.decodeUnknown(JobProvisioningData)
const encodeProvisioning = Schema.encodeSync(JobProvisioningData)

export const make = (options: InstancePoolOptions): InstancePool => {
  const { store, compute, owner, runnerFreshMs } = options
  /** When the runner of an instance (by instance id) last reported to a follower here. */
  const runnerSeenAt = new Map<string, number>()
  /**
   * The row of each instance this engine made busy, as it wrote it: its release tries the write
   * back to idle at that version without reading the row first (a row changed since is read
   * again, as on any conflict).
   */
  const busyRows = new Map<string, StoredDocument>()
  const rememberBusy = (row: StoredDocument) =>
    Effect.sync(() => {
      if (row.status === "busy") busyRows.set(row.id, row)
    })

  /** Writes `f` of the instance, again on a conflict; `first` is a row just read, used for the first try. */
  const updateInstance = (id: string, f: (instance: Instance, raw: Record<string, unknown>) => Record<string, unknown>, first?: StoredDocument) =>
    Effect.gen(function* () {
      for (let attempt = 0; attempt < 20; attempt++) {
        const row = attempt === 0 && first !== undefined ? first : yield* store.instances.get(id)
        const instance = yield* decodeInstance(row.doc).pipe(Effect.orDie)
        const next = f(instance, row.doc as Record<string, unknown>)
        const result = yield* store.instances
          .update(id, { status: String(next.status), doc: next }, { expectedVersion: row.version })
          .pipe(Effect.either)
        if (result._tag === "Right") return
        if (result.left.reason !== "Conflict") return yield* Effect.fail(result.left)
      }
    })

  // A project whose plan found no idle instance is not asked again for NO_IDLE_TTL_MS, unless
  // this engine releases one meanwhile: in a burst of placements every plan would otherwise
  // look up the same empty list. (An instance another replica frees is seen that much later.)
  const noIdleSince = new Map<string, number>()
  let releases = 0

  // An instance of a backend that makes one per job (a Kubernetes pod of the job's image) is
  // terminated when its job ends: another job may want another image.
  const terminatePerJob = (instanceId: string, row: StoredDocument) =>
    Effect.gen(function* () {
      const instance = yield* readInstance(row)
      if (instance.status !== "busy") return false
      const backend = yield* compute.backend(instance.projectName, instance.backend)
      if (backend.instancePerJob !== true) return false
      const pd = yield* decodeProvisioning((row.doc as any).provisioning_data)
      yield* terminate(instance.projectName, instanceId, pd, "its job ended (this backend makes one instance per job)")
      return true
    }).pipe(Effect.catchAll(() => Effect.succeed(false)))

  /** Back to idle when its job ended: one read of the row serves the per-job check and the write's first try. */
  const toIdle = (instance: Instance, raw: Record<string, unknown>) =>
    instance.status === "busy"
      ? { ...raw, ...encodeInstance(new Instance({ ...instance, status: "idle", jobName: undefined, lastJobProcessedAt: new Date() })) }
      : raw

  const release = (instanceId: string | undefined) =>
    instanceId === undefined
      ? Effect.void
      : Effect.gen(function* () {
        const known = busyRows.get(instanceId)
        busyRows.delete(instanceId)
        const row = known ?? (yield* store.instances.get(instanceId))
        if (yield* terminatePerJob(instanceId, row)) return
        yield* updateInstance(instanceId, toIdle, row)
      }).pipe(
        Effect.ensuring(Effect.sync(() => {
          releases++
          noIdleSince.clear()
        })),
        Effect.catchAll((e) => Effect.logWarning(`could not release instance ${instanceId}: ${errorMessage(e)}`))
      )

  // A host of an SSH fleet is the user's: it is not terminated but flagged unreachable and given
  // back (upstream), and the fleet processor clears the flag once its runner answers again.
  const flagUnreachable = (instanceId: string, reason: string) =>
    Effect.zipRight(Effect.sync(() => busyRows.delete(instanceId)), updateInstance(instanceId, (instance, raw) =>
      instance.status === "busy" || instance.status === "idle"
        ? { ...raw, ...encodeInstance(new Instance({ ...instance, status: "idle", unreachable: true, terminationReasonMessage: reason, jobName: undefined, lastJobProcessedAt: new Date() })) }
        : raw
    ).pipe(Effect.catchAll((e) => Effect.logWarning(`could not flag instance ${instanceId} unreachable: ${errorMessage(e)}`))))

  const terminate = (project: string, instanceId: string | undefined, pd: JobProvisioningData, reason: string) =>
    instanceId !== undefined && pd.backend === REMOTE_BACKEND ? flagUnreachable(instanceId, reason) : Effect.gen(function* () {
      if (instanceId !== undefined) busyRows.delete(instanceId)
      const backend = yield* compute.backend(project, pd.backend)
      yield* backend.terminateInstance(pd.instanceId, pd.region, pd.backendData)
      if (instanceId !== undefined) {
        yield* updateInstance(instanceId, (instance, raw) => ({
          ...raw,
          ...encodeInstance(new Instance({ ...instance, status: "terminated", terminationReason: reason, jobName: undefined }))
        }))
      }
    }).pipe(Effect.catchAll((e) => Effect.logWarning(`could not terminate instance ${pd.instanceId}: ${errorMessage(e)}`)))

  /** Whether this engine heard from the instance's runner moments ago (its last job's events). */
  const runnerFresh = (instanceId: string) => {
    const seen = runnerSeenAt.get(instanceId)
    return seen !== undefined && Date.now() - seen < runnerFreshMs
  }

  /**
   * The listed row of an idle instance whose runner is fresh, taken in one statement: at the
   * version listed and with nobody's lease on it (what a claim and an update would check in two).
   * Undefined when it changed since, or is held: the claim below then decides.
   */
  const takeListed = ({ row, instance }: ListedInstance, jobName: string) =>
    Effect.gen(function* () {
      if (instance.status !== "idle" || instance.unreachable) return undefined
      const pd = yield* decodeProvisioning((row.doc as any).provisioning_data).pipe(Effect.orDie)
      // A runner that cannot even be reached is for the claim to judge (and end), as before.
      const reached = yield* withRunner(compute, instance.projectName, pd, (client) => Effect.sync(() => noteHealthy(client))).pipe(Effect.isSuccess)
      if (!reached) return undefined
      const next = new Instance({ ...instance, status: "busy", jobName })
      const written = yield* store.instances.update(
        row.id,
        { status: next.status, doc: { ...(row.doc as object), ...encodeInstance(next) } },
        { expectedVersion: row.version, unleased: true }
      ).pipe(
        Effect.tap(rememberBusy),
        Effect.asSome,
        Effect.catchIf((e) => e.reason === "Conflict" || e.reason === "LeaseLost" || e.reason === "NotFound", () => Effect.succeedNone)
      )
      if (Option.isNone(written)) return undefined
      return Option.some<Placement>({ pd, instanceId: row.id })
    })

  const takeIdle = (offer: InstanceOffer, jobName: string, listed?: ListedInstance) =>
    Effect.suspend(() =>
      listed !== undefined && listed.row.id === offer.instanceId && runnerFresh(listed.row.id)
        ? Effect.flatMap(takeListed(listed, jobName), (taken) => (taken !== undefined ? Effect.succeed(taken) : claimIdle(offer, jobName)))
        : claimIdle(offer, jobName)
    )

  const claimIdle = (offer: InstanceOffer, jobName: string) =>
    Effect.gen(function* () {
      const claimed = yield* store.instances.claim({ filter: { ids: [offer.instanceId!], statuses: ["idle"] }, owner, leaseMs: 30_000 })
      if (claimed.length === 0) return Option.none<Placement>()
      const row = claimed[0]
      const instance = yield* decodeInstance(row.doc).pipe(Effect.orDie)
      // Flagged unreachable since the plan was made: not taken until the fleet's check clears it.
      if (instance.unreachable) {
        yield* store.instances.release(row.id, row.lease!.token).pipe(Effect.ignore)
        return Option.none<Placement>()
      }
      const pd = yield* decodeProvisioning((row.doc as any).provisioning_data).pipe(Effect.orDie)
      // A runner that died with a previous server process must not get the job: it is asked,
      // unless this engine heard from it moments ago (its last job's events).
      const fresh = runnerFresh(row.id)
      const healthy = yield* withRunner(compute, instance.projectName, pd, (client) => (fresh ? Effect.sync(() => noteHealthy(client)) : waitHealthy(client, 3_000))).pipe(
        Effect.isSuccess
      )
      const next = healthy
        ? new Instance({ ...instance, status: "busy", jobName })
        : instance.backend === REMOTE_BACKEND
          ? new Instance({ ...instance, unreachable: true, terminationReasonMessage: "its runner did not answer when it was to be reused" })
          : new Instance({ ...instance, status: "terminated", jobName: undefined, terminationReason: "unreachable when reused" })
      yield* store.instances.update(
        row.id,
        { status: next.status, doc: { ...(row.doc as object), ...encodeInstance(next) } },
        { lease: row.lease!.token, releaseLease: true }
      ).pipe(Effect.tap(rememberBusy))
      // Its machine (or runner process) may still be there, only slow to answer: the backend is
      // asked to end it too, so that nothing is left running under a terminated record.
      if (next.status === "terminated") {
        yield* compute.backend(instance.projectName, pd.backend).pipe(
          Effect.flatMap((backend) => backend.terminateInstance(pd.instanceId, pd.region, pd.backendData)),
          Effect.catchAll((e) => Effect.logWarning(`could not terminate instance ${pd.instanceId}, unreachable when reused: ${errorMessage(e)}`)),
          Effect.forkDaemon
        )
      }
      return healthy ? Option.some({ pd, instanceId: row.id }) : Option.none()
    })

  /** The record of an instance about to be made for `jobName` of `run` from `offer`. */
  const provisioningInstance = (project: string, offer: InstanceOffer, run: Run, jobName: string): Instance => {
    const id = crypto.randomUUID()
    const idleDuration = run.runSpec.configuration.idleDuration
    return new Instance({
      id,
      projectName: project,
      backend: offer.backend,
      instanceType: offer.instance,
      name: `${jobName}-${id.slice(0, 4)}`,
      jobName,
      status: "provisioning",
      created: new Date(),
      region: offer.region,
      price: offer.price,
      idleDuration: typeof idleDuration === "number" ? idleDuration : idleDuration === "off" ? null : options.defaultIdleDurationSeconds
    })
  }

  // Instances being created are held under a lease renewed while the backend works, so that the
  // reconcile pass (Reconcile.ts) tells them from instances whose creation died with a server.
  // The lease comes with the row's insert; the record of how creation ended frees it in the
  // same statement, so that creation costs no statement for the lease itself.
  const creationLeaseMs = options.creationLeaseMs ?? 30_000
  /** Inserts the instances being created, each under a creation lease: their leases. */
  const insertCreating = (project: string, bases: ReadonlyArray<Instance>) =>
    Effect.forEach(bases, (base) =>
      store.instances.insert({ id: base.id, project, name: base.name, status: base.status, doc: encodeInstance(base), lease: { owner, leaseMs: creationLeaseMs } }).pipe(
        Effect.map((row): CreationLease => ({ id: row.id, token: row.lease!.token, held: true }))
      ))
  const whileCreating = <A, E>(leases: ReadonlyArray<CreationLease>, effect: Effect.Effect<A, E>): Effect.Effect<A, E> =>
    Effect.gen(function* () {
      const renewal = yield* store.instances.renewMany(leases.filter((l) => l.held), creationLeaseMs).pipe(
        Effect.catchAll((e) => Effect.logWarning(`could not renew the lease on instances being created: ${errorMessage(e)}`)),
        Effect.delay(Duration.millis(Math.max(200, Math.floor(creationLeaseMs / 3)))),
        Effect.forever,
        // Creation runs uninterruptible (Provisioning.ts); the renewal must stay stoppable.
        Effect.interruptible,
        Effect.forkDaemon
      )
      return yield* effect.pipe(
        Effect.ensuring(Fiber.interrupt(renewal).pipe(
          // Leases the final record did not free (it failed, or never ran) are freed here.
          Effect.zipRight(Effect.forEach(leases, (lease) => (lease.held ? store.instances.release(lease.id, lease.token).pipe(Effect.ignore) : Effect.void), { discard: true }))
        ))
      )
    })

  /**
   * Writes how an instance's creation ended under its creation lease, freeing it in the same
   * statement; a lease lost meanwhile (renewals failed for longer than it lasts) does not stop
   * the record, which is then written as without one.
   */
  const recordUnderLease = (lease: CreationLease, patch: DocumentPatch) =>
    store.instances.update(lease.id, patch, { lease: lease.token, releaseLease: true }).pipe(
      Effect.tap(() => Effect.sync(() => {
        lease.held = false
      })),
      Effect.catchIf((e) => e.reason === "LeaseLost", () => store.instances.update(lease.id, patch)),
      Effect.tap(rememberBusy)
    )

  /** Records `base` as made and busy, with where its backend put it. */
  const recordReady = (base: Instance, lease: CreationLease, pd: JobProvisioningData) => {
    const ready = new Instance({
      ...base,
      status: "busy",
      ...(pd.hostname !== null ? { hostname: pd.hostname } : {}),
      ...(pd.runnerPort !== undefined ? { runnerPort: pd.runnerPort } : {}),
      ...(pd.sshPort !== undefined ? { sshPort: pd.sshPort } : {}),
      username: pd.username,
      backendInstanceId: pd.instanceId
    })
    return Effect.as(recordUnderLease(lease, { status: "busy", doc: { ...encodeInstance(ready), provisioning_data: encodeProvisioning(pd) } }), { pd, instanceId: base.id })
  }

  /** What ended a backend's creation, in words: its error, else "interrupted". */
  const failureWords = (cause: Cause.Cause<unknown>) =>
    Option.match(Cause.failureOption(cause), { onSome: errorMessage, onNone: () => (Cause.isInterrupted(cause) ? "interrupted while the backend created it" : Cause.pretty(cause).split("\n")[0]) })

  /** Records `base` as terminated: its backend could not make it. */
  const recordFailed = (base: Instance, lease: CreationLease, why: string) =>
    recordUnderLease(lease, { status: "terminated", doc: encodeInstance(new Instance({ ...base, status: "terminated", terminationReason: why })) }).pipe(Effect.ignore)

  const create = (project: string, offer: InstanceOffer, run: Run, jobName: string, job?: InstanceJob, onPending?: InstanceConfiguration["onPending"]) =>
    Effect.gen(function* () {
      const backend = yield* compute.backend(project, offer.backend)
      const base = provisioningInstance(project, offer, run, jobName)
      const { id, name } = base
      const leases = yield* insertCreating(project, [base])
      return yield* whileCreating(leases, backend.createInstance(offer, { projectName: project, instanceName: name, instanceId: id, sshKeys: [], ...(job !== undefined ? { job } : {}), ...(onPending === undefined ? {} : { onPending }) }).pipe(
        // Failed, or interrupted while the backend waited (a stop of a job pending in a batch
        // queue): the record says it never came up.
        Effect.onError((cause) => recordFailed(base, leases[0], failureWords(cause))),
        Effect.flatMap((pd) => recordReady(base, leases[0], pd))
      ))
    })

  const createGroup = (project: string, offer: InstanceOffer, run: Run, jobNames: ReadonlyArray<string>, job: InstanceJob, onPending?: InstanceConfiguration["onPending"]) =>
    Effect.gen(function* () {
      const backend = yield* compute.backend(project, offer.backend)
      if (backend.createInstanceGroup === undefined) {
        return yield* Effect.fail(new BackendError({ module: "InstancePool", method: "createGroup", reason: "Invalid", message: `backend ${offer.backend} cannot create the nodes of a multi-node job together` }))
      }
      const bases = jobNames.map((jobName) => provisioningInstance(project, offer, run, jobName))
      const leases = yield* insertCreating(project, bases)
      return yield* whileCreating(leases, backend.createInstanceGroup(offer, bases.map((base) => ({ projectName: project, instanceName: base.name, instanceId: base.id, sshKeys: [], job, ...(onPending === undefined ? {} : { onPending }) }))).pipe(
        Effect.onError((cause) => Effect.forEach(bases, (base, i) => recordFailed(base, leases[i], failureWords(cause)), { discard: true })),
        Effect.flatMap((pds) => Effect.forEach(bases, (base, i) => recordReady(base, leases[i], pds[i])))
      ))
    })

  const terminateExpiredIdle = Effect.gen(function* () {
    const idle = yield* store.instances.list({ statuses: ["idle"] })
    const now = Date.now()
    for (const row of idle) {
      const instance = yield* readInstance(row).pipe(Effect.either)
      if (Either.isLeft(instance)) {
        // One unreadable row must not stop the sweep of the others; it is reported each pass.
        yield* Effect.logError(`idle instance sweep: ${instance.left.message}`)
        continue
      }
      const i = instance.right
      const deadline = instanceIdleDeadline(i)
      if (deadline === null || deadline > now) continue
      const got = yield* store.instances.claim({ filter: { ids: [i.id], statuses: ["idle"] }, owner, leaseMs: 60_000 })
      if (got.length === 0) continue
      const pd = yield* decodeProvisioning((got[0].doc as any).provisioning_data).pipe(Effect.option)
      if (Option.isSome(pd)) yield* terminate(i.projectName, i.id, pd.value, "idle_duration exceeded")
      else yield* Effect.logError(`instance ${i.id} (${i.backend}) has no readable provisioning data: marked terminated without asking its backend to terminate it; check the backend for a machine left running`).pipe(Effect.zipRight(store.instances.update(i.id, { status: "terminated" }, { lease: got[0].lease!.token }).pipe(Effect.ignore)))
      yield* store.instances.release(i.id, got[0].lease!.token).pipe(Effect.ignore)
    }
  })

  const idleHint = (project: string) => {
    const noIdleAt = noIdleSince.get(project)
    const skipIdle = noIdleAt !== undefined && Date.now() - noIdleAt < NO_IDLE_TTL_MS
    const releasesBefore = releases
    const planAt = Date.now()
    return {
      skipIdle,
      found: (idleInstances: number | undefined) => {
        if (idleInstances === 0 && releases === releasesBefore) noIdleSince.set(project, planAt)
        else if (idleInstances !== undefined) noIdleSince.delete(project)
      }
    }
  }

  return {
    takeIdle,
    create,
    createGroup,
    release,
    terminate,
    terminateExpiredIdle,
    noteRunnerSeen: (instanceId) => void runnerSeenAt.set(instanceId, Date.now()),
    idleHint
  }
}
