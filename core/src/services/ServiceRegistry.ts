/**
 * The server's view of its services: for each service run asked for, its configuration and
 * the replicas that serve it (running jobs, with the address each is reached at through its
 * backend's transport), each replica's requests in flight and whether it is in rotation, and
 * the service's request counts. Read from the state store and read again when the store reports
 * a change to the run; kept in memory so that a request through the proxy finds its replica
 * without a store read.
 */
import type * as http from "node:http"
import { Context, Deferred, Effect, Exit, FiberId, Layer, Runtime, Scope } from "effect"
import type { ServiceConfiguration } from "../domain/Configuration.ts"
import { type JobProvisioningData, latestSubmission } from "../domain/Job.ts"
import { isRunStatusFinished } from "../domain/Status.ts"
import { Compute } from "../engine/Compute.ts"
import { decodeRow, type LoadedRun } from "../engine/RunRecord.ts"
import { StateStore, type StateStoreError, type StoredDocument } from "../ports/StateStore.ts"
import { type LatencyHistogram, ServiceMetrics } from "./ServiceMetrics.ts"
import { Prober } from "./Probes.ts"
import { type AppAddress, appListens, makeReplicaAgent } from "./ReplicaClient.ts"

/**
 * Where a replica's app is reached from the server: `relayed` when a relay before it accepts
 * connections whether or not the app listens (a container's published port, a forward that
 * says so), so that the check of whether it listens asks for an HTTP answer.
 */
export type Address = AppAddress

/** A replica out of rotation after a failure stays out this long at first, doubling up to the most. */
const FIRST_BACKOFF_MS = 100
const MOST_BACKOFF_MS = 5_000

/**
 * A replica whose app has not accepted a connection yet is tried again this soon, by how long
 * its job has run: an app starts in a fraction of a second (a request held at zero replicas
 * waits for exactly that) or in minutes (a model server loading weights).
 */
const startingRetryMs = (runningMs: number): number => (runningMs < 5_000 ? 5 : runningMs < 60_000 ? 100 : 1_000)

/** One replica of a service: a running job of the run. */
export class Replica {
  /** Requests sent to it whose answers have not ended. */
  outstanding = 0
  /** Failures in a row; reset by a success. */
  failures = 0
  /** Out of rotation until then (epoch ms). */
  outUntil = 0
  /** Set when the replica is to stop: it takes no new request, and stops once `outstanding` is 0. */
  draining = false
  /** Whether its app was seen listening (accepting, or answering behind a relay): until then each request checks first. */
  listening = false
  /** Whether it has answered a request: until then a request that fails before its answer finds it still starting. */
  answered = false
  /** The check in flight of whether its app listens (one at a time, whoever waits). */
  checking: Promise<boolean> | undefined
  /** Why the last attempt to reach it failed (said in a 503 when no replica could be reached). */
  lastError: string | undefined
  /** Whether its probes passed (true when it has none). */
  ready: boolean
  /** Why its last probe failed, while it is not ready. */
  probeError: string | undefined
  /** When the registry first saw it running (epoch ms). */
  readonly runningSince = Date.now()
  address: Address | undefined
  resolving: Promise<Address> | undefined
  scope: Scope.CloseableScope | undefined
  constructor(
    readonly project: string,
    readonly submissionId: string,
    readonly replicaNum: number,
    readonly jobName: string,
    readonly pd: JobProvisioningData,
    readonly servicePort: number,
    hasProbes: boolean
  ) {
    this.ready = !hasProbes
  }

  inRotation(now: number): boolean {
    return !this.draining && this.ready && this.outUntil <= now
  }

  /** A request could not reach it, or it broke off an answer: out of rotation for a while. */
  failed(now: number, backoffMs?: number): void {
    this.failures++
    this.outUntil = now + (backoffMs ?? Math.min(MOST_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (this.failures - 1)))
  }

  /**
   * Whether its app accepts a connection now at `address` (remembered once it has): one check
   * at a time, shared by whoever asks (held requests, the rolling deployment).
   */
  listeningNow(address: Address): Promise<boolean> {
    if (this.listening) return Promise.resolve(true)
    return (this.checking ??= appListens(address).then((ok) => {
      this.checking = undefined
      if (ok) this.listening = true
      return ok
    }))
  }

  /** Its app does not accept connections yet (it was never seen to): tried again soon, not counted as a failure. */
  starting(now: number): void {
    this.outUntil = now + startingRetryMs(now - this.runningSince)
  }

  /**
   * A request did not reach its app (nothing of its body sent). One that has never answered is
   * still starting (a relay before it accepted for an app not listening yet): it is checked
   * again on the starting schedule, not put out. A kept-alive connection it had just closed says
   * nothing about it; any other failure puts it out for a while.
   */
  notReached(now: number, why: string, reusedSocket: boolean): void {
    if (!this.answered) {
      this.listening = false
      this.lastError = `its app did not answer yet (${why})`
      this.starting(now)
    } else if (!reusedSocket) this.failed(now)
  }

  succeeded(): void {
    this.answered = true
    this.failures = 0
    this.outUntil = 0
    this.lastError = undefined
  }
}

/** The version of the service's run last read (-1 before the first read). */
const loadedVersion = (entry: ServiceEntry): number => entry.loaded?.row.version ?? -1

/** A service as the proxy sees it. */
export interface ServiceEntry {
  readonly project: string
  readonly runName: string
  runId: string
  configuration: ServiceConfiguration
  /** The run has finished (or is no longer a service): requests get 404. */
  finished: boolean
  replicas: ReadonlyArray<Replica>
  /** Read again from the store before it is used next. */
  stale: boolean
  /** The run as last read or reported with its row, decoded (what the autoscaler scales from while not stale). */
  loaded: LoadedRun | undefined
  /** The read the store's change reports started, while it is in flight. */
  following: Promise<void> | undefined
  /** Reports that came during that read: the newest version they named (Infinity: one named none; -1: none came). */
  followAgain: number
  /** The row of the newest write of this process reported during that read (taken instead of reading again). */
  followRow: StoredDocument | undefined
  /** Called (once each) when the replicas change. */
  readonly waiters: Set<() => void>
  readonly metrics: ServiceMetrics
  /** The replicas the autoscaler wants now; undefined until it has looked at the service. */
  desired: number | undefined
  /** A rolling deployment under way: replicas still on an older spec, and what the roll waits for. */
  deployment: { readonly outdated: number; readonly message: string } | undefined
  /**
   * What the other server replicas counted (0 alone): requests per second over the last minute,
   * requests and proxy errors, and the latencies each keeps (histograms).
   */
  others: { rps: number; requests: number; errors: number; latencies: ReadonlyArray<LatencyHistogram> }
}

export interface ServiceRegistryService {
  /** The service run of that name in the project, or undefined when there is none (or it is not a service). */
  readonly lookup: (project: string, runName: string) => Effect.Effect<ServiceEntry | undefined, StateStoreError>
  /** Where a replica's app is reached: its host port (from the runner), forwarded by the backend's transport. */
  readonly address: (replica: Replica) => Promise<Address>
  /** Resolves when the service's replicas change, or after `ms`. */
  readonly changed: (entry: ServiceEntry, ms: number) => Promise<void>
  /** Reads the service again now (after a change or a scaling step). */
  readonly refresh: (entry: ServiceEntry) => Effect.Effect<void, StateStoreError>
  /** The services read so far, live ones. */
  readonly entries: () => ReadonlyArray<ServiceEntry>
  /** The project's live services that serve a model: model name → run name. */
  readonly models: (project: string) => Effect.Effect<ReadonlyMap<string, string>, StateStoreError>
  /** Called with a service whenever its replicas change (the autoscaler and the probes listen). */
  readonly onReplicasChanged: (listener: (entry: ServiceEntry) => void) => void
  /** This server's kept-alive connections to replicas (closed with the server). */
  readonly agent: http.Agent
}

export class ServiceRegistry extends Context.Tag("@dstack-ts/core/services/ServiceRegistry")<ServiceRegistry, ServiceRegistryService>() {}

/** The longest a project's model index is used without a run change reported. */
const MODEL_INDEX_TTL_MS = 5_000

const key = (project: string, runName: string) => `${project}\u0000${runName}`

export const make: Effect.Effect<ServiceRegistryService, never, StateStore | Compute | Scope.Scope> = Effect.gen(function* () {
  const store = yield* StateStore
  const compute = yield* Compute
  const runtime = yield* Effect.runtime<never>()
  const run = Runtime.runPromise(runtime)
  const entries = new Map<string, ServiceEntry>()
  /**
   * First loads of a service under way: a lookup that finds one waits for it, then looks again,
   * so that concurrent first requests share one entry (its metrics, its replicas' requests in flight).
   */
  const firstLoads = new Map<string, Deferred.Deferred<void>>()
  const byRunId = new Map<string, ServiceEntry>()
  const listeners: Array<(entry: ServiceEntry) => void> = []

  const closeReplica = (replica: Replica) => {
    const scope = replica.scope
    replica.scope = undefined
    replica.address = undefined
    replica.resolving = undefined
    if (scope !== undefined) void run(Scope.close(scope, Exit.void))
  }

  const notify = (entry: ServiceEntry) => {
    const waiters = [...entry.waiters]
    entry.waiters.clear()
    for (const w of waiters) w()
    for (const l of listeners) l(entry)
    // New replicas of a service with probes wait for them before they take requests.
    prober.follow(entry)
  }
  const prober = new Prober((replica) => address(replica), notify)

  /** Brings an entry up to date with its stored run: replicas are the running jobs. */
  const reconcile = (entry: ServiceEntry, row: StoredDocument) =>
    Effect.map(decodeRow(row), (read) => {
      const { record } = read
      const r = record.run
      const configuration = r.runSpec.configuration
      if (configuration.type !== "service") {
        entry.finished = true
        entry.replicas = []
        return
      }
      // A read made before a newer write, answered after the newer version was applied (a
      // lookup of a stale entry, a refresh, beside a followed write): what it found is already
      // out of date, and nothing would correct it once the run stops being written.
      if (entry.runId === r.id && row.version < loadedVersion(entry)) return
      // The same of a run the name had before the one applied (a service deleted and applied
      // again while the read was under way): the entry stays with the newer run.
      const current = entry.loaded?.record.run
      if (current !== undefined && entry.runId !== r.id && r.submittedAt.getTime() < current.submittedAt.getTime()) return
      if (entry.runId !== r.id) {
        for (const replica of entry.replicas) closeReplica(replica)
        entry.replicas = []
        byRunId.delete(entry.runId)
        entry.runId = r.id
        entry.loaded = undefined
      }
      entry.loaded = read
      byRunId.set(r.id, entry)
      entry.configuration = configuration
      entry.finished = isRunStatusFinished(r.status) || row.deleted === true
      const known = new Map(entry.replicas.map((replica) => [replica.submissionId, replica]))
      const next: Array<Replica> = []
      if (!entry.finished) {
        for (const job of r.jobs) {
          const sub = latestSubmission(job)
          if (sub === undefined || sub.status !== "running" || sub.jobProvisioningData === undefined) continue
          const port = job.jobSpec.servicePort ?? configuration.port.containerPort
          next.push(known.get(sub.id) ?? new Replica(entry.project, sub.id, job.jobSpec.replicaNum, job.jobSpec.jobName, sub.jobProvisioningData, port, (configuration.probes ?? []).length > 0))
        }
      }
      const kept = new Set(next)
      for (const replica of entry.replicas) if (!kept.has(replica)) closeReplica(replica)
      const changed = next.length !== entry.replicas.length || next.some((replica, i) => replica !== entry.replicas[i])
      entry.replicas = next
      entry.stale = false
      if (changed || entry.finished) notify(entry)
    })

  const load = (entry: ServiceEntry) =>
    store.runs.getByName(entry.project, entry.runName).pipe(
      Effect.flatMap((row) => reconcile(entry, row)),
      Effect.catchIf((e) => e.reason === "NotFound", () =>
        Effect.sync(() => {
          entry.finished = true
          for (const replica of entry.replicas) closeReplica(replica)
          entry.replicas = []
          entry.stale = false
          notify(entry)
        }))
    )

  /** A macrotask later: the writer of a row reported has gone on to its next wait by then. */
  const afterWriter = Effect.async<void>((resume) => {
    setImmediate(() => resume(Effect.void))
  })

  // Model names by project, read from the project's live runs; any run change makes it stale.
  const modelIndex = new Map<string, { readonly at: number; readonly models: ReadonlyMap<string, string> }>()
  let runChanges = 0
  yield* store.watch((change) => {
    if (change.kind !== "run") return
    runChanges++
    modelIndex.clear()
    const entry = byRunId.get(change.id)
    if (entry === undefined) {
      // A new run may take the name of a finished service: read those again when next asked,
      // and one being read now once more after (its read may have been made before this run).
      for (const e of entries.values()) {
        if (e.finished) e.stale = true
        if (e.following !== undefined) e.followAgain = Infinity
      }
      return
    }
    follow(entry, change.version, change.row)
  })

  /**
   * Someone waits for a replica (or the autoscaler follows it): the run is read again now, or
   * taken from the report when it brings the row written (a write of this process). Each write
   * is reported twice (when it is made and again by the change feed), so a report of a version
   * already read is skipped, and reports during a read in flight make one more read after it
   * only when they named a newer version than it found.
   */
  function follow(entry: ServiceEntry, version: number | undefined, row?: StoredDocument): void {
    if (version !== undefined && version <= loadedVersion(entry)) return
    const written = row !== undefined && row.version === version ? row : undefined
    if (entry.following !== undefined) {
      entry.followAgain = Math.max(entry.followAgain, version ?? Infinity)
      if (written !== undefined && written.version >= (entry.followRow?.version ?? -1)) entry.followRow = written
      return
    }
    entry.stale = true
    // A row reported by its writer is decoded once the writer has gone on to its next wait (a
    // macrotask later, not in its report): the run's worker hands a placed job to its runner
    // before this decode, which no request waits for then. Suspended: a schema's decode runs
    // when it is called, not when its Effect runs, so `reconcile` is not called before then.
    entry.following = run(Effect.ignore(written !== undefined ? Effect.zipRight(afterWriter, Effect.suspend(() => reconcile(entry, written))) : load(entry))).finally(() => {
      entry.following = undefined
      const again = entry.followAgain
      const againRow = entry.followRow
      entry.followAgain = -1
      entry.followRow = undefined
      if (again > loadedVersion(entry)) follow(entry, again === Infinity ? undefined : again, againRow)
    })
  }

  const agent = makeReplicaAgent()
  // Forwards, tunnels and kept-alive connections close with the server.
  yield* Effect.addFinalizer(() => Effect.sync(() => {
    agent.destroy()
    prober.close()
    for (const entry of entries.values()) for (const replica of entry.replicas) closeReplica(replica)
  }))

  // A service known and up to date is answered with a resolved Effect (no fiber on the request path).
  const lookup = (project: string, runName: string): Effect.Effect<ServiceEntry | undefined, StateStoreError> => {
    const known = entries.get(key(project, runName))
    if (known !== undefined && !known.stale) return Effect.succeed(known.finished ? undefined : known)
    return Effect.suspend(() => {
      const k = key(project, runName)
      const known = entries.get(k)
      if (known !== undefined && !known.stale) return Effect.succeed(known.finished ? undefined : known)
      if (known?.following !== undefined) {
        // The registry is reading the run again (or decoding a row its writer reported): wait for
        // that rather than read it once more per request; read only when it left the entry stale.
        const following = known.following
        return Effect.flatMap(Effect.promise(() => following.then(() => undefined, () => undefined)), () =>
          known.stale ? Effect.map(load(known), () => (known.finished ? undefined : known)) : Effect.succeed(known.finished ? undefined : known))
      }
      if (known === undefined) {
        const loading = firstLoads.get(k)
        // Whatever its outcome (a failure, the first caller gone), look again: the entry is there, or not.
        if (loading !== undefined) return Effect.zipRight(Deferred.await(loading), lookup(project, runName))
      }
      const entry: ServiceEntry = known ?? {
        project,
        runName,
        runId: "",
        configuration: undefined as never,
        finished: true,
        replicas: [],
        stale: true,
        loaded: undefined,
        following: undefined,
        followAgain: -1,
        followRow: undefined,
        waiters: new Set(),
        metrics: new ServiceMetrics(),
        desired: undefined,
        deployment: undefined,
        others: { rps: 0, requests: 0, errors: 0, latencies: [] }
      }
      const loaded = Effect.map(load(entry), () => {
        if (entry.configuration === undefined) return undefined
        entries.set(k, entry)
        return entry.finished ? undefined : entry
      })
      if (known !== undefined) return loaded
      const done = Deferred.unsafeMake<void>(FiberId.none)
      firstLoads.set(k, done)
      return Effect.ensuring(loaded, Effect.suspend(() => {
        if (firstLoads.get(k) === done) firstLoads.delete(k)
        return Deferred.succeed(done, undefined)
      }))
    })
  }

  const resolveAddress = (replica: Replica): Effect.Effect<Address, unknown> =>
    Effect.gen(function* () {
      const transport = yield* compute.transport(replica.pd.backend)
      // As the engine reaches the instance's runner: an SSH fleet host's target carries its SSH
      // access (read from its instance row), a backend's own runner access is asked of it.
      const target = yield* compute.target(replica.project, replica.pd)
      const scope = yield* Scope.make()
      replica.scope = scope
      // A job in a container publishes its port on a host port the runner reports (the container
      // engine's proxy there accepts before the app does); a process job listens on the host
      // itself, on the port the runner gave it.
      const runtime = yield* transport.connect(target).pipe(
        Effect.flatMap((client) => client.fetch("/api/job_runtime_data")),
        Effect.flatMap((res) => Effect.tryPromise(() => res.json() as Promise<{ ports?: Record<string, number>; network_mode?: string }>)),
        Effect.scoped
      )
      const hostPort = runtime.ports?.[String(replica.servicePort)] ?? replica.servicePort
      const forwarded = yield* transport.forward(target, 0, hostPort).pipe(Scope.extend(scope))
      return {
        host: forwarded.localHost,
        port: forwarded.localPort,
        relayed: runtime.network_mode === "bridge" || forwarded.relayed === true,
        ...(forwarded.connect !== undefined ? { connect: forwarded.connect } : {})
      }
    })

  const models = (project: string): Effect.Effect<ReadonlyMap<string, string>, StateStoreError> =>
    Effect.suspend(() => {
      const known = modelIndex.get(project)
      if (known !== undefined && Date.now() - known.at < MODEL_INDEX_TTL_MS) return Effect.succeed(known.models)
      const readAt = runChanges
      return Effect.map(store.runs.listDocs({ projects: [project], statuses: ["submitted", "provisioning", "running"] }, { limit: 1_000 }), (rows) => {
        const found = new Map<string, string>()
        for (const row of rows) {
          const spec = (row.doc as { run?: { run_spec?: { run_name?: string; configuration?: { type?: string; model?: { name?: string } | string } } } })?.run?.run_spec
          const model = spec?.configuration?.model
          const name = typeof model === "string" ? model : model?.name
          if (spec?.configuration?.type === "service" && name !== undefined && spec.run_name !== undefined && !found.has(name)) found.set(name, spec.run_name)
        }
        if (readAt === runChanges) modelIndex.set(project, { at: Date.now(), models: found })
        return found
      })
    })

  /** Where a replica's app is reached: resolved once (and again after a failure). */
  const address = (replica: Replica): Promise<Address> => {
    if (replica.address !== undefined) return Promise.resolve(replica.address)
    replica.resolving ??= run(resolveAddress(replica)).then(
      (address) => {
        replica.address = address
        return address
      },
      (error: unknown) => {
        replica.resolving = undefined
        closeReplica(replica)
        throw error
      }
    )
    return replica.resolving
  }

  // The live services in the store when the server starts: the autoscaler follows them (a
  // service scaled up before a restart comes back down) without waiting for a first request.
  const loadLive = store.runs.list({ statuses: ["submitted", "provisioning", "running"] }, { limit: 10_000 }).pipe(
    Effect.flatMap((rows) => {
      const services = rows.filter((row) =>
        (row.doc as { run?: { run_spec?: { configuration?: { type?: string } } } } | null)?.run?.run_spec?.configuration?.type === "service")
      return Effect.forEach(services, (row) => lookup(row.project, row.name), { discard: true, concurrency: 4 })
    }),
    Effect.catchAllCause((cause) => Effect.logWarning("services: cannot read the live services at start", cause))
  )
  yield* Effect.forkScoped(loadLive)

  return {
    lookup,
    models,
    address,
    changed: (entry, ms) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          entry.waiters.delete(done)
          resolve()
        }, ms)
        const done = () => {
          clearTimeout(timer)
          resolve()
        }
        entry.waiters.add(done)
      }),
    refresh: (entry) => load(entry),
    entries: () => [...entries.values()].filter((e) => !e.finished),
    onReplicasChanged: (listener) => {
      listeners.push(listener)
    },
    agent
  }
})

export const layer: Layer.Layer<ServiceRegistry, never, StateStore | Compute> = Layer.scoped(ServiceRegistry, make)
