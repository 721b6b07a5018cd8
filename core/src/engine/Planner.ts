/**
 * Planning: which instances could run a job. Idle instances of the project's fleets come
 * first (they cost no provisioning time), then the offers of every backend the project has,
 * cheapest first. Every offer left out keeps the reasons, so "no offers" can say which
 * requirement excluded what; a backend that could not be made from its configuration or could
 * not be asked is named with its error.
 */
import { Effect } from "effect"
import type { Requirements } from "../domain/Job.ts"
import { Fleet } from "../domain/Fleet.ts"
import { Instance } from "../domain/Instance.ts"
import { InstanceOffer, isOfferAvailable } from "../domain/Offer.ts"
import { type BackendError, type ExcludedOffer, offerMisfits } from "../ports/Backend.ts"
import { decodeDocument, StateStore, type StateStoreError, type StoredDocument } from "../ports/StateStore.ts"
import { Compute } from "./Compute.ts"

/** An idle instance's row as a plan listed it, and the instance it holds. */
export interface ListedInstance {
  readonly row: StoredDocument
  readonly instance: Instance
}

export interface JobOffers {
  /** Idle instances first, then backend offers by price. */
  readonly offers: ReadonlyArray<InstanceOffer>
  readonly excluded: ReadonlyArray<ExcludedOffer>
  /** Backends that could not be made or asked, with the error, so a plan can show them. */
  readonly failedBackends: ReadonlyArray<{ readonly backend: string; readonly message: string }>
  /** The backend types asked (for messages). */
  readonly backendTypes: ReadonlyArray<string>
  /** Backends the configuration names that the project does not have. */
  readonly missingBackends?: ReadonlyArray<string>
  /** The backends the project has, when the configuration's list left none of them. */
  readonly projectBackends?: ReadonlyArray<string>
  /** Set when only existing instances were considered (`fleets`, or a multi-node task's `cluster`). */
  readonly existingOnly?: "fleets" | "cluster"
  /** Idle instances the project had (fitting or not); undefined when they were not looked up. */
  readonly idleInstances?: number
  /** The idle instances offered, as listed and decoded (by instance id): taken at that version when nothing changed since. */
  readonly idleRows?: ReadonlyMap<string, ListedInstance>
}

export interface PlanFilter {
  /** Only instances of these fleets (`fleets: [...]`): no new instance from a backend. */
  readonly fleets?: ReadonlyArray<string> | undefined
  /**
   * Only instances of `placement: cluster` fleets, or new ones from backends that create a
   * multi-node job's instances together (`createInstanceGroup`): the nodes of a multi-node task
   * (`nodes: N`) must reach each other.
   */
  readonly clusterOnly?: boolean | undefined
  readonly backends?: ReadonlyArray<string> | undefined
  readonly regions?: ReadonlyArray<string> | undefined
  readonly instanceTypes?: ReadonlyArray<string> | undefined
}

export interface PlanOptions {
  /** The caller knows the project has no idle instance: skip looking them up. */
  readonly skipIdle?: boolean
  /**
   * Where the project's idle instance rows come from (a cache of them, for plans shown to
   * clients); default: the store.
   */
  readonly idleRows?: Effect.Effect<ReadonlyArray<{ readonly id: string; readonly doc: unknown }>, StateStoreError>
}

const readInstance = decodeDocument("instance", Instance)
const readFleet = decodeDocument("fleet", Fleet)

/** The names of the project's live `placement: cluster` fleets. */
export const clusterFleets = (project: string): Effect.Effect<ReadonlySet<string>, StateStoreError, StateStore> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const rows = yield* store.fleets.list({ projects: [project], statuses: ["active"] })
    const names = new Set<string>()
    for (const row of rows) {
      const fleet = yield* readFleet(row)
      if (fleet.spec.configuration.placement === "cluster") names.add(fleet.name)
    }
    return names
  })

/** An existing idle instance seen as an offer of itself. */
export const offerOfInstance = (instance: Instance): InstanceOffer =>
  new InstanceOffer({
    backend: instance.backend,
    region: instance.region,
    price: instance.price,
    instance: instance.instanceType,
    availability: instance.status === "idle" ? "idle" : "busy",
    instanceId: instance.id,
    ...(instance.fleetName !== undefined ? { fleetName: instance.fleetName } : {})
  })

/** Reasons an offer is outside the configuration's backends/regions/instance_types lists. */
const filterMisfits = (offer: InstanceOffer, filter: PlanFilter): ReadonlyArray<string> => {
  const reasons: Array<string> = []
  if (filter.fleets && filter.fleets.length > 0 && (offer.fleetName === undefined || !filter.fleets.includes(offer.fleetName))) {
    reasons.push(`fleets: ${offer.fleetName === undefined ? "the instance is in no fleet" : `fleet ${offer.fleetName} is not`} in [${filter.fleets.join(", ")}]`)
  }
  if (filter.backends && filter.backends.length > 0 && !filter.backends.includes(offer.backend)) {
    reasons.push(`backends: ${offer.backend} is not in [${filter.backends.join(", ")}]`)
  }
  if (filter.regions && filter.regions.length > 0 && !filter.regions.includes(offer.region)) {
    reasons.push(`regions: ${offer.region} is not in [${filter.regions.join(", ")}]`)
  }
  if (filter.instanceTypes && filter.instanceTypes.length > 0 && !filter.instanceTypes.includes(offer.instance.name)) {
    reasons.push(`instance_types: ${offer.instance.name} is not in [${filter.instanceTypes.join(", ")}]`)
  }
  return reasons
}

/** The offers that could run a job with these requirements in the project. */
export const offersForJob = (
  project: string,
  requirements: Requirements,
  filter: PlanFilter = {},
  options: PlanOptions = {}
): Effect.Effect<JobOffers, StateStoreError | BackendError, StateStore | Compute> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const compute = yield* Compute
    const excluded: Array<ExcludedOffer> = []

    const idleRows = options.skipIdle === true ? [] : yield* (options.idleRows ?? store.instances.list({ projects: [project], statuses: ["idle"] }))
    const idle: Array<InstanceOffer> = []
    const listed = new Map<string, ListedInstance>()
    const clusters = filter.clusterOnly === true ? yield* clusterFleets(project) : undefined
    // Backends that may not reach their instances from this replica (`unreachableHere`), by type.
    const here = new Map<string, ((i: Instance) => string | undefined) | undefined>()
    const unreachableHere = (instance: Instance) =>
      Effect.gen(function* () {
        if (!here.has(instance.backend)) {
          const backend = yield* compute.backend(project, instance.backend).pipe(Effect.option)
          here.set(instance.backend, backend._tag === "Some" ? backend.value.unreachableHere : undefined)
        }
        return here.get(instance.backend)?.(instance)
      })
    for (const row of idleRows) {
      // A row that does not decode is an error naming it, not an instance quietly left out.
      const instance = yield* readInstance(row)
      const offer = offerOfInstance(instance)
      const reasons = [...filterMisfits(offer, filter), ...offerMisfits(offer, requirements)]
      if (instance.unreachable) reasons.push("unreachable: its runner does not answer")
      const notHere = yield* unreachableHere(instance)
      if (notHere !== undefined) reasons.push(`unreachable from this server: ${notHere}`)
      if (clusters !== undefined && (instance.fleetName === undefined || !clusters.has(instance.fleetName))) {
        reasons.push("nodes: a multi-node task runs on a placement: cluster fleet, and this instance is in none")
      }
      if (reasons.length === 0) {
        idle.push(offer)
        // Rows read whole (the plan's own list) carry their version; bodies handed in do not.
        if ("version" in row) listed.set(row.id, { row: row as StoredDocument, instance })
      }
      else excluded.push({ offer, reasons })
    }
    idle.sort((a, b) => a.price - b.price)

    // `fleets` take existing instances only; multi-node tasks existing instances of cluster
    // fleets, or new ones from backends that create a job's nodes together (one allocation).
    const fleetsOnly = filter.fleets !== undefined && filter.fleets.length > 0
    const existingOnly = fleetsOnly || filter.clusterOnly === true
    const made = fleetsOnly ? { backends: [], failed: [] } : yield* compute.projectBackends(project)
    const wanted = (type: string) => !filter.backends || filter.backends.length === 0 || filter.backends.includes(type)
    const backends = made.backends.filter((b) => wanted(b.type) && (filter.clusterOnly !== true || b.createInstanceGroup !== undefined))
    // The project's backend types, made or not: one its plugin refused is there, only broken.
    const allTypes = [...made.backends.map((b) => b.type), ...made.failed.map((f) => f.backend)]
    const missingBackends = (filter.backends ?? []).filter((name) => !allTypes.includes(name))
    const failedBackends: Array<{ backend: string; message: string }> = filter.clusterOnly === true ? [] : made.failed.filter((f) => wanted(f.backend)).map((f) => ({ ...f }))
    const fresh: Array<InstanceOffer> = []
    // Backends are asked at once; a single one in this fiber (forking one costs more than most
    // backends take to answer from memory).
    const answers = yield* Effect.forEach(
      backends,
      (backend) => Effect.either(backend.getOffers(requirements)).pipe(Effect.map((answer) => ({ backend, answer }))),
      { concurrency: backends.length > 1 ? "unbounded" : 1 }
    )
    for (const { backend, answer } of answers) {
      if (answer._tag === "Left") {
        failedBackends.push({ backend: backend.type, message: answer.left.message ?? answer.left.reason })
        continue
      }
      excluded.push(...answer.right.excluded)
      for (const offer of answer.right.offers) {
        const reasons = [...filterMisfits(offer, filter)]
        if (!isOfferAvailable(offer)) reasons.push(`availability: ${offer.availability}`)
        if (reasons.length === 0) fresh.push(offer)
        else excluded.push({ offer, reasons })
      }
    }
    fresh.sort((a, b) => a.price - b.price)
    return {
      offers: [...idle, ...fresh],
      excluded,
      failedBackends,
      backendTypes: [...backends.map((b) => b.type), ...failedBackends.map((f) => f.backend)],
      missingBackends,
      projectBackends: allTypes,
      ...(existingOnly && backends.length === 0 ? { existingOnly: filter.clusterOnly === true ? "cluster" as const : "fleets" as const } : {}),
      ...(options.skipIdle === true ? {} : { idleInstances: idleRows.length, idleRows: listed })
    }
  })

/**
 * One line that says why nothing fits: the reasons that excluded the most offers, counted.
 * e.g. `no offers fit: gpu: needs 1× GPU, instance has 0 GPUs (1 offer); …`
 */
export const explainNoOffers = (offers: JobOffers): string => {
  if (offers.existingOnly !== undefined && offers.excluded.length === 0) {
    return offers.existingOnly === "cluster"
      ? "no offers: a multi-node task runs on idle instances of a placement: cluster fleet, and the project has none idle (create one: type: fleet, placement: cluster, ssh_config)"
      : "no offers: the fleets named in `fleets` have no idle instance"
  }
  if (offers.backendTypes.length === 0 && offers.existingOnly === undefined) {
    const missing = offers.missingBackends ?? []
    const has = offers.projectBackends ?? []
    return missing.length > 0
      ? `no offers: backends: ${missing.join(", ")} ${missing.length === 1 ? "is" : "are"} not configured in this project (it has: ${has.join(", ") || "none"})`
      : "no offers: the project has no backends (configure one, e.g. `local` or `ssh`)"
  }
  const counts = new Map<string, number>()
  for (const ex of offers.excluded) for (const reason of ex.reasons) counts.set(reason, (counts.get(reason) ?? 0) + 1)
  const parts = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([r, n]) => `${r} (${n} offer${n === 1 ? "" : "s"})`)
  for (const f of offers.failedBackends) parts.push(`backend ${f.backend} failed: ${f.message}`)
  return parts.length === 0
    ? `no offers from ${offers.backendTypes.join(", ")}`
    : `no offers fit: ${parts.join("; ")}`
}
