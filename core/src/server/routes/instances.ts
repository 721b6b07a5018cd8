// /api/instances/list and /api/project/{p}/instances/get: the machines the engine provisioned
// or reuses (the fleets routes are in fleets.ts).
import { Effect, Schema } from "effect"
import { Instance } from "../../domain/Instance.ts"
import { decodeDocument, StateStore, type StateStoreError, type StoredDocument } from "../../ports/StateStore.ts"
import { excerpt, fromStateStore, notFound, serverError } from "../ApiError.ts"
import { jsonRoute } from "../Route.ts"

const optionalKey = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.optional(schema).pipe(Schema.fromKey(wire))

export const ListInstancesRequest = Schema.Struct({
  projectNames: optionalKey(Schema.NullOr(Schema.Array(Schema.String)), "project_names"),
  fleetNames: optionalKey(Schema.NullOr(Schema.Array(Schema.String)), "fleet_names"),
  onlyActive: Schema.optionalWith(Schema.Boolean, { default: () => false }).pipe(Schema.fromKey("only_active")),
  limit: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 1000)), { default: () => 1000 })
})
export const GetByIdRequest = Schema.Struct({ id: Schema.String })

// A stored row that does not decode is the server's fault (500, naming the row), never skipped.
const unreadable = (e: StateStoreError) => serverError(e.message ?? e.reason, e)
const instanceOf = decodeDocument("instance", Instance)
const decodeInstance = (row: StoredDocument) => instanceOf(row).pipe(Effect.mapError(unreadable))
const ACTIVE_INSTANCE = ["pending", "provisioning", "idle", "busy", "terminating"]

export const instanceRoutes = [
  jsonRoute({
    method: "POST", path: "/api/instances/list", summary: "Instances in the projects you can see", tag: "instances", access: "user",
    request: ListInstancesRequest, response: Schema.Array(Instance),
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const store = yield* StateStore
        const principal = ctx.principal!
        const visible = principal.globalRole === "admin"
          ? undefined
          : (yield* store.projects.listForUser(principal.username).pipe(Effect.mapError(fromStateStore))).map((p) => p.projectName)
        const wanted = input.projectNames ?? undefined
        const projects = wanted && visible ? wanted.filter((p) => visible.includes(p)) : wanted ?? visible
        if (projects !== undefined && projects.length === 0) return []
        const rows = yield* store.instances
          .list({ ...(projects ? { projects } : {}), ...(input.onlyActive ? { statuses: ACTIVE_INSTANCE } : {}) }, { limit: input.limit })
          .pipe(Effect.mapError(fromStateStore))
        const all = yield* Effect.forEach(rows, decodeInstance)
        return input.fleetNames ? all.filter((i) => i.fleetName !== undefined && input.fleetNames!.includes(i.fleetName)) : all
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/instances/get", summary: "One instance by id", tag: "instances", access: { project: "user" },
    request: GetByIdRequest, response: Instance,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const store = yield* StateStore
        const missing = notFound(`Instance ${excerpt(input.id)} does not exist in project ${ctx.projectName}`)
        const row = yield* store.instances.get(input.id).pipe(Effect.mapError((e) => (e.reason === "NotFound" ? missing : fromStateStore(e))))
        if (row.project !== ctx.projectName) return yield* Effect.fail(missing)
        return yield* decodeInstance(row)
      })
  })
]
