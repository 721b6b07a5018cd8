/**
 * Whether the project can ever place a workflow's multi-node jobs (a provider job of `nodes: N`,
 * torchrun's): N nodes need one `placement: cluster` fleet with N instances that fit the job,
 * or a backend that creates a job's instances together (`createInstanceGroup`). Checked when the
 * workflow is planned, so that a workflow asking for more than that is refused at its line,
 * saying why, before anything runs. Busy instances count: they take the job once they are free.
 */
import { Effect } from "effect"
import type { ConfigurationIssue } from "../config/ConfigurationError.ts"
import { Fleet } from "../domain/Fleet.ts"
import { Instance } from "../domain/Instance.ts"
import { Requirements } from "../domain/Job.ts"
import { Compute } from "../engine/Compute.ts"
import { offerOfInstance } from "../engine/Planner.ts"
import { type Backend, type BackendError, offerMisfits } from "../ports/Backend.ts"
import { decodeDocument, StateStore, type StateStoreError } from "../ports/StateStore.ts"
import type { WorkflowPlan } from "./WorkflowPlan.ts"
import { issueAt, type WorkflowFiles } from "./WorkflowFiles.ts"

const readInstance = decodeDocument("instance", Instance)
const readFleet = decodeDocument("fleet", Fleet)

/** Instances that are or will be there: a terminating one will not take a job. */
const LIVE_INSTANCE_STATUSES = ["pending", "provisioning", "idle", "busy"]

/** One cluster fleet as a multi-node job sees it. */
export interface ClusterFleetFit {
  readonly name: string
  readonly instances: number
  /** Instances whose resources fit the job. */
  readonly fitting: number
  /** Why the others do not fit, most frequent first. */
  readonly misfits: ReadonlyArray<string>
}

/** What the check needs of a backend. */
export type GroupBackend = Pick<Backend, "type" | "createInstanceGroup" | "remoteHosts">

/** Why a backend cannot create the nodes of a multi-node job together. */
const whyNoGroup = (backend: GroupBackend): string =>
  backend.remoteHosts !== undefined
    ? `${backend.type}: hosts you bring take a multi-node job only as a placement: cluster fleet`
    : `${backend.type}: it makes one instance at a time, with no guarantee that they reach each other (it has no instance group)`

/** What a multi-node job of `nodes` nodes would find; `undefined` when it can be placed. */
export const clusterProblem = (
  nodes: number,
  fleets: ReadonlyArray<ClusterFleetFit>,
  backends: ReadonlyArray<GroupBackend>
): string | undefined => {
  if (fleets.some((f) => f.fitting >= nodes)) return undefined
  if (backends.some((b) => b.createInstanceGroup !== undefined)) return undefined
  const best = [...fleets].sort((a, b) => b.fitting - a.fitting || b.instances - a.instances)[0]
  const fleetPart = best === undefined
    ? "the project has no placement: cluster fleet"
    : `the largest placement: cluster fleet, ${best.name}, has ${best.fitting} ${best.fitting === 1 ? "instance that fits" : "instances that fit"}${
      best.instances > best.fitting ? ` (of ${best.instances}; the others: ${best.misfits.slice(0, 3).join("; ")})` : ""
    }`
  const backendPart = backends.length === 0
    ? "no backend of the project creates a group of instances"
    : `its backends cannot create the nodes together (${backends.map(whyNoGroup).join("; ")})`
  return `nodes: ${nodes} needs ${nodes} instances of one placement: cluster fleet, or a backend that creates a job's instances together: ${fleetPart}, and ${backendPart}; add hosts to a fleet with placement: cluster (ssh_config), or ask for fewer nodes`
}

/** The project's live cluster fleets, each with how many of its instances fit `requirements`. */
export const clusterFleetFits = (
  project: string,
  requirements: Requirements
): Effect.Effect<ReadonlyArray<ClusterFleetFit>, StateStoreError, StateStore> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const names = new Set<string>()
    for (const row of yield* store.fleets.list({ projects: [project], statuses: ["active"] })) {
      const fleet = yield* readFleet(row)
      if (fleet.spec.configuration.placement === "cluster") names.add(fleet.name)
    }
    if (names.size === 0) return []
    const fits = new Map<string, { instances: number; fitting: number; misfits: Map<string, number> }>()
    for (const name of names) fits.set(name, { instances: 0, fitting: 0, misfits: new Map() })
    for (const row of yield* store.instances.list({ projects: [project], statuses: LIVE_INSTANCE_STATUSES })) {
      const instance = yield* readInstance(row)
      const fit = instance.fleetName === undefined ? undefined : fits.get(instance.fleetName)
      if (fit === undefined) continue
      fit.instances++
      const reasons = offerMisfits(offerOfInstance(instance), requirements)
      if (reasons.length === 0) fit.fitting++
      for (const reason of reasons) fit.misfits.set(reason, (fit.misfits.get(reason) ?? 0) + 1)
    }
    return [...fits.entries()].map(([name, f]) => ({
      name,
      instances: f.instances,
      fitting: f.fitting,
      misfits: [...f.misfits.entries()].sort((a, b) => b[1] - a[1]).map(([reason]) => reason)
    }))
  })

/**
 * The issues of a plan's multi-node jobs the project cannot place, each at the workflow's
 * `nodes` (or its provider when the provider chose the number).
 */
export const placementIssues = (
  project: string,
  files: WorkflowFiles,
  plan: WorkflowPlan
): Effect.Effect<ReadonlyArray<ConfigurationIssue>, StateStoreError | BackendError, StateStore | Compute> =>
  Effect.gen(function* () {
    const multiNode = plan.jobs.filter((j) => j.configuration.nodes > 1)
    if (multiNode.length === 0) return []
    const compute = yield* Compute
    const { backends } = yield* compute.projectBackends(project)
    const issues: Array<ConfigurationIssue> = []
    for (const job of multiNode) {
      const configuration = job.configuration
      const requirements = new Requirements({
        resources: configuration.resources,
        maxPrice: configuration.maxPrice,
        spot: configuration.spotPolicy === "spot" ? true : configuration.spotPolicy === "auto" ? null : false,
        reservation: configuration.reservation
      })
      const fleets = yield* clusterFleetFits(project, requirements)
      const problem = clusterProblem(configuration.nodes, fleets, backends)
      if (problem === undefined) continue
      const def = files.workflows.get(job.workflow)
      if (def === undefined) continue
      const at = "nodes" in def.entry ? [...def.path, "nodes"] : [...def.path, "provider"]
      issues.push(issueAt(def.source, at, `${job.id === job.workflow ? "" : `job ${job.id}: `}${problem}`))
    }
    return issues
  })
