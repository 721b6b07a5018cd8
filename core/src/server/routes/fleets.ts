// /api/fleets/list and /api/project/{p}/fleets/{list,get,get_plan,apply,delete,delete_instances}:
// fleets of the user's own hosts (SSH fleets). Applying stores the fleet and a pending instance
// per host; the engine's fleet processor provisions them. Re-applying a fleet adds and removes
// hosts in place (FleetUpdate.ts). Answers never carry private keys.
import { Effect, Either, Schema } from "effect"
import { unsupportedKeys } from "../../config/Unsupported.ts"
import * as Api from "../../api/fleets.ts"
import { Fleet, FleetPlan, FleetSpec, redactFleet, redactFleetSpec } from "../../domain/Fleet.ts"
import { Instance } from "../../domain/Instance.ts"
import { InstanceDisk, InstanceOffer, InstanceResources, InstanceType } from "../../domain/Offer.ts"
import { Compute } from "../../engine/Compute.ts"
import { createSshFleet, LIVE_INSTANCE_STATUSES, loadFleet, remoteHostsOf } from "../../engine/Fleets.ts"
import { hostChanges, updateSshFleet } from "../../engine/FleetUpdate.ts"
import { REMOTE_BACKEND } from "../../engine/RemoteAccess.ts"
import type { RemoteHost } from "../../ports/Backend.ts"
import { decodeDocument, StateStore, type StateStoreError, type StoredDocument } from "../../ports/StateStore.ts"
import { ApiError, alreadyExists, badRequest, excerpt, fromStateStore, notFound, serverError } from "../ApiError.ts"
import { jsonRoute } from "../Route.ts"
import { randomRunName } from "./runNames.ts"

const unreadable = (e: StateStoreError) => (e.reason === "Invalid" ? serverError(e.message ?? e.reason, e) : fromStateStore(e))
const readInstance = decodeDocument("instance", Instance)
const readFleet = decodeDocument("fleet", Fleet)

/** A stored fleet with its live instances, as answered: private keys left out. */
const fleetAnswer = (row: StoredDocument) =>
  Effect.gen(function* () {
    const store = yield* StateStore
    return redactFleet(yield* loadFleet(store, row).pipe(Effect.mapError(unreadable)))
  })

/** Every reason the spec cannot be applied, at once, located under `loc`. */
const checkSpec = (spec: FleetSpec, loc: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const compute = yield* Compute
    const detail: Array<{ msg: string; code: "invalid_request"; loc: Array<string | number> }> = []
    for (const k of unsupportedKeys(spec.configuration)) detail.push({ msg: k.message, code: "invalid_request", loc: [...loc, "configuration", ...k.path] })
    const hosts = remoteHostsOf(spec.configuration)
    if (Either.isLeft(hosts)) {
      for (const p of hosts.left) if (!detail.some((d) => d.msg === p.message)) detail.push({ msg: p.message, code: "invalid_request", loc: [...loc, "configuration", ...p.path] })
    }
    if (detail.length === 0 && !compute.availableTypes.includes(REMOTE_BACKEND)) {
      detail.push({
        msg: `no installed plugin provides the ${REMOTE_BACKEND} backend, which provisions SSH fleet hosts: add @dstack-ts/backend-ssh to the server build`,
        code: "invalid_request",
        loc: [...loc, "configuration", "ssh_config"]
      })
    }
    if (detail.length > 0) return yield* Effect.fail(new ApiError({ status: 400, detail }))
    return Either.getOrThrow(hosts)
  })

/** The live fleet of that name, if any. */
const currentFleet = (project: string, name: string | undefined) =>
  Effect.gen(function* () {
    if (name === undefined) return undefined
    const store = yield* StateStore
    const row = yield* store.fleets.getByName(project, name).pipe(
      Effect.map((r): StoredDocument | undefined => r),
      Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(undefined)),
      Effect.mapError(fromStateStore)
    )
    return row === undefined || row.status === "terminated" || row.status === "failed" ? undefined : row
  })

/** Hosts of other live fleets of the project (not `fleetId`) that this spec lists too: a host is in one fleet. */
const hostsTaken = (project: string, hosts: ReadonlyArray<RemoteHost>, fleetId?: string) =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const rows = yield* store.instances.list({ projects: [project], statuses: [...LIVE_INSTANCE_STATUSES] }).pipe(Effect.mapError(fromStateStore))
    const taken: Array<string> = []
    for (const row of rows) {
      if (fleetId !== undefined && row.parentId === fleetId) continue
      const instance = yield* readInstance(row).pipe(Effect.mapError(unreadable))
      if (instance.backend !== REMOTE_BACKEND) continue
      const match = hosts.find((h) => h.hostname === instance.hostname && h.port === (instance.sshPort ?? 22))
      if (match !== undefined) taken.push(`${match.hostname}:${match.port} (in fleet ${instance.fleetName})`)
    }
    return taken
  })

const hostOffer = (host: RemoteHost) =>
  new InstanceOffer({
    backend: REMOTE_BACKEND,
    region: REMOTE_BACKEND,
    price: 0,
    availability: "available",
    instance: new InstanceType({
      name: host.hostname,
      resources: new InstanceResources({ cpus: 0, memoryMib: 0, gpus: [], spot: false, disk: new InstanceDisk({ sizeMib: 0 }), description: "detected when provisioned" })
    })
  })

/** What re-applying `spec` over the live fleet `current` would change, or why it cannot be done in place. */
const changesOf = (current: StoredDocument, spec: FleetSpec) =>
  Effect.map(readFleet(current).pipe(Effect.mapError(unreadable)), (fleet) => hostChanges(fleet.spec.configuration, spec.configuration))

const getFleetRow = (project: string, input: typeof Api.GetFleetRequest.Type) =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const key = input.name ?? input.id ?? ""
    if (key === "") return yield* Effect.fail(badRequest("give the fleet's name or id", ["body", "name"]))
    const missing = notFound(`Fleet ${excerpt(key)} does not exist in project ${project}`)
    const row = yield* (input.name != null ? store.fleets.getByName(project, input.name) : store.fleets.get(input.id ?? "")).pipe(
      Effect.mapError((e) => (e.reason === "NotFound" ? missing : fromStateStore(e)))
    )
    if (row.project !== project) return yield* Effect.fail(missing)
    return row
  })

export const fleetRoutes = [
  jsonRoute({
    method: "POST", path: "/api/fleets/list", summary: "Fleets in the projects you can see, newest first", tag: "fleets", access: "user",
    request: Api.ListFleetsRequest, response: Schema.Array(Fleet),
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const store = yield* StateStore
        const principal = ctx.principal!
        const visible = principal.globalRole === "admin"
          ? undefined
          : (yield* store.projects.listForUser(principal.username).pipe(Effect.mapError(fromStateStore))).map((p) => p.projectName)
        const wanted = input.projectName != null ? [input.projectName] : undefined
        const projects = wanted && visible ? wanted.filter((p) => visible.includes(p)) : wanted ?? visible
        if (projects !== undefined && projects.length === 0) return []
        const rows = yield* store.fleets.list(
          { ...(projects ? { projects } : {}), ...(input.onlyActive ? { statuses: ["submitted", "active", "terminating"] } : {}) },
          {
            limit: input.limit,
            ascending: input.ascending,
            ...(input.prevCreatedAt != null ? { prevSubmittedAt: input.prevCreatedAt } : {}),
            ...(input.prevId != null ? { prevId: input.prevId } : {})
          }
        ).pipe(Effect.mapError(fromStateStore))
        return yield* Effect.forEach(rows, fleetAnswer)
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/fleets/list", summary: "The project's fleets", tag: "fleets", access: { project: "user" },
    request: Api.ListProjectFleetsRequest, response: Schema.Array(Fleet),
    handler: (_, ctx) =>
      Effect.gen(function* () {
        const store = yield* StateStore
        const rows = yield* store.fleets.list({ projects: [ctx.projectName!] }).pipe(Effect.mapError(fromStateStore))
        return yield* Effect.forEach(rows, fleetAnswer)
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/fleets/get", summary: "One fleet by name or id (by id also a deleted one)", tag: "fleets", access: { project: "user" },
    request: Api.GetFleetRequest, response: Fleet,
    handler: (input, ctx) => Effect.flatMap(getFleetRow(ctx.projectName!, input), fleetAnswer)
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/fleets/get_plan", summary: "Plan a fleet: its hosts and whether it is created or replaced", tag: "fleets", access: { project: "user" },
    request: Api.GetFleetPlanRequest, response: FleetPlan,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const hosts = yield* checkSpec(input.spec, ["body", "spec"])
        const current = yield* currentFleet(ctx.projectName!, input.spec.configuration.name)
        const changes = current === undefined ? undefined : yield* changesOf(current, input.spec)
        const offers = hosts.map(hostOffer)
        return new FleetPlan({
          projectName: ctx.projectName!,
          user: ctx.principal!.username,
          spec: redactFleetSpec(input.spec),
          ...(current !== undefined ? { currentResource: yield* fleetAnswer(current) } : {}),
          offers,
          totalOffers: offers.length,
          maxOfferPrice: offers.length === 0 ? null : 0,
          // As upstream: `update` when the fleet can be changed in place, else `create` (re-create).
          action: changes !== undefined && Either.isRight(changes) ? "update" : "create"
        }, { disableValidation: true })
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/fleets/apply", summary: "Create a fleet of your hosts from its plan, or add and remove hosts of an existing one", tag: "fleets", access: { project: "user" },
    request: Api.ApplyFleetPlanRequest, response: Fleet,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const store = yield* StateStore
        const project = ctx.projectName!
        const spec = input.plan.spec
        const hosts = yield* checkSpec(spec, ["body", "plan", "spec"])
        const name = spec.configuration.name ?? randomRunName()
        const current = yield* currentFleet(project, name)
        if (current !== undefined) {
          if (current.status === "terminating") return yield* Effect.fail(alreadyExists(`Fleet ${name} is being deleted: apply it again once it is gone`))
          const changes = yield* changesOf(current, spec)
          if (Either.isLeft(changes)) return yield* Effect.fail(badRequest(`Fleet ${name} cannot be updated: ${changes.left}`, ["body", "plan", "spec", "configuration"]))
          const added = hosts.filter((h) => changes.right.added.includes(h.hostname))
          const taken = yield* hostsTaken(project, added, current.id)
          if (taken.length > 0) return yield* Effect.fail(badRequest(`these hosts are already in a fleet of project ${project}: ${taken.join(", ")}`, ["body", "plan", "spec", "configuration", "ssh_config", "hosts"]))
          yield* updateSshFleet(store, current, spec, hosts, changes.right).pipe(
            Effect.mapError((e) => (e._tag === "FleetUpdateRefused" ? badRequest(e.message, ["body", "plan", "spec", "configuration", "ssh_config", "hosts"]) : fromStateStore(e)))
          )
          return yield* fleetAnswer(yield* store.fleets.get(current.id).pipe(Effect.mapError(fromStateStore)))
        }
        const taken = yield* hostsTaken(project, hosts)
        if (taken.length > 0) return yield* Effect.fail(badRequest(`these hosts are already in a fleet of project ${project}: ${taken.join(", ")}`, ["body", "plan", "spec", "configuration", "ssh_config", "hosts"]))
        const named = spec.configuration.name === undefined
          ? new FleetSpec({ ...spec, configuration: { ...spec.configuration, name } }, { disableValidation: true })
          : spec
        const fleet = yield* createSshFleet(store, project, ctx.principal!.username, name, named, hosts).pipe(Effect.mapError(fromStateStore))
        return redactFleet(fleet)
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/fleets/delete", summary: "Delete fleets: their hosts are cleaned up, then the fleets go", tag: "fleets", access: { project: "user" },
    request: Api.DeleteFleetsRequest, response: Schema.Struct({}),
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const store = yield* StateStore
        const project = ctx.projectName!
        const rows: Array<StoredDocument> = []
        for (const name of input.names) {
          const row = yield* currentFleet(project, name)
          if (row === undefined) return yield* Effect.fail(notFound(`Fleet ${excerpt(name)} does not exist in project ${project}`))
          const busy = (yield* store.instances.list({ parentIds: [row.id], statuses: ["busy"] }).pipe(Effect.mapError(fromStateStore)))
          if (busy.length > 0) {
            const jobs = yield* Effect.forEach(busy, (r) => Effect.map(readInstance(r).pipe(Effect.mapError(unreadable)), (i) => `${i.name} runs ${i.jobName ?? "a job"}`))
            return yield* Effect.fail(badRequest(`Fleet ${name} is in use: ${jobs.join(", ")}; stop its runs first`))
          }
          rows.push(row)
        }
        for (const row of rows) {
          if (row.status === "terminating") continue
          yield* store.fleets.update(row.id, { status: "terminating", doc: { ...(row.doc as object), status: "terminating" } }).pipe(Effect.mapError(fromStateStore))
        }
        return {}
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/fleets/delete_instances", summary: "Remove hosts from a fleet by instance number", tag: "fleets", access: { project: "user" },
    request: Api.DeleteFleetInstancesRequest, response: Schema.Struct({}),
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const store = yield* StateStore
        const project = ctx.projectName!
        const row = yield* currentFleet(project, input.name)
        if (row === undefined) return yield* Effect.fail(notFound(`Fleet ${excerpt(input.name)} does not exist in project ${project}`))
        const fleet = yield* loadFleet(store, row).pipe(Effect.mapError(unreadable))
        const chosen = input.instanceNums.map((num) => ({ num, instance: fleet.instances.find((i) => i.instanceNum === num) }))
        const missing = chosen.filter((c) => c.instance === undefined).map((c) => c.num)
        if (missing.length > 0) return yield* Effect.fail(notFound(`Fleet ${input.name} has no live instance number ${missing.join(", ")}`))
        const busy = chosen.filter((c) => c.instance!.status === "busy")
        if (busy.length > 0) return yield* Effect.fail(badRequest(`instance ${busy.map((c) => `${c.num} runs ${c.instance!.jobName ?? "a job"}`).join(", ")}: stop the runs first`))
        for (const { instance } of chosen) {
          const got = yield* store.instances.claim({ filter: { ids: [instance!.id], statuses: ["idle", "pending"] }, owner: "api", leaseMs: 10_000 }).pipe(Effect.mapError(fromStateStore))
          if (got.length === 0) continue
          const doc = { ...(got[0].doc as object), status: "terminating", termination_reason: "terminated_by_user" }
          yield* store.instances.update(instance!.id, { status: "terminating", doc }, { lease: got[0].lease!.token }).pipe(Effect.mapError(fromStateStore))
          yield* store.instances.release(instance!.id, got[0].lease!.token).pipe(Effect.ignore)
        }
        // Touching the fleet wakes the fleet processor.
        yield* store.fleets.update(row.id, { doc: row.doc }).pipe(Effect.mapError(fromStateStore))
        return {}
      })
  })
]
