// /api/backends/list_types and /api/project/{p}/backends/*: which backend types this build
// has (from its plugins) and which a project uses. A configuration is checked by making the
// backend from it before it is stored, so a bad one is refused with the plugin's own message.
import { Effect, Option, Schema, Scope, Exit } from "effect"
import { StateStore } from "../../ports/StateStore.ts"
import { PluginHost } from "../../plugin/PluginHost.ts"
import { Compute } from "../../engine/Compute.ts"
import { badRequest, excerpt, fromStateStore, notFound, serverError } from "../ApiError.ts"
import { jsonRoute } from "../Route.ts"
import { Access, satisfiesProjectRole } from "../Access.ts"

/** A backend as a project has it: its type, its configuration, and whether it is a server default. */
export const BackendInfo = Schema.Struct({
  name: Schema.String,
  config: Schema.Unknown,
  isDefault: Schema.propertySignature(Schema.Boolean).pipe(Schema.fromKey("is_default"))
})

/** `{ "type": "aws", …fields }`, as upstream's backend configurations are written. */
export const BackendConfigRequest = Schema.Struct({ type: Schema.String }, Schema.Record({ key: Schema.String, value: Schema.Unknown }))
export const DeleteBackendsRequest = Schema.Struct({
  backendsNames: Schema.propertySignature(Schema.Array(Schema.String)).pipe(Schema.fromKey("backends_names"))
})

/** Makes the backend once from the configuration to see whether its plugin accepts it. */
const checkConfig = (type: string, config: unknown) =>
  Effect.gen(function* () {
    const host = yield* PluginHost
    const factory = host.backend(type)
    if (Option.isNone(factory)) {
      const known = host.contributions("backends").map((c) => c.key)
      return yield* Effect.fail(badRequest(`No installed plugin provides the ${excerpt(type)} backend (this server has: ${known.join(", ") || "none"})`, ["body", "type"]))
    }
    const scope = yield* Scope.make()
    const made = yield* factory.value(config).pipe(Scope.extend(scope), Effect.either)
    yield* Scope.close(scope, Exit.void)
    if (made._tag === "Left") {
      // A plugin's own decoding already says `invalid <type> backend configuration: …`.
      const why = (made.left.message ?? made.left.reason).replace(/^invalid \S+ backend configuration: /i, "")
      return yield* Effect.fail(badRequest(`Invalid ${excerpt(type)} backend configuration: ${why}`, ["body"]))
    }
  })

const upsert = (project: string, body: typeof BackendConfigRequest.Type) =>
  Effect.gen(function* () {
    const { type, ...config } = body
    yield* checkConfig(type, config)
    const store = yield* StateStore
    yield* store.backends.upsert({ project, type, config }).pipe(Effect.mapError(fromStateStore))
    return { name: type, config, isDefault: false }
  })

export const backendRoutes = [
  jsonRoute({
    method: "POST", path: "/api/backends/list_types", summary: "Backend types this server's plugins provide", tag: "backends", access: "user",
    response: Schema.Array(Schema.String),
    handler: () => Effect.map(Compute, (compute) => [...compute.availableTypes].sort())
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/backends/list", summary: "The project's backends, its own and the server's defaults; their configurations only for project admins", tag: "backends", access: { project: "user" },
    response: Schema.Array(BackendInfo),
    handler: (_: void, ctx) =>
      Effect.gen(function* () {
        // A configuration may hold credentials: members below project admin see the types only.
        const role = yield* (yield* Access).projectRole(ctx.principal!, ctx.projectName!)
        const mayReadConfig = satisfiesProjectRole(ctx.principal!, role, "admin")
        const store = yield* StateStore
        const compute = yield* Compute
        const own = yield* store.backends.list(ctx.projectName!).pipe(Effect.mapError(fromStateStore))
        // A default backend its plugin cannot make is still listed (plans name why it offers
        // nothing); only a failure to read the project's backends fails the answer.
        const made = yield* compute.projectBackends(ctx.projectName!).pipe(
          Effect.mapError((e) => serverError(`cannot list the backends of ${excerpt(ctx.projectName!)}: ${e.message}`, e))
        )
        const ownTypes = new Set(own.map((b) => b.type))
        const defaults = [...made.backends.map((b) => b.type), ...made.failed.map((f) => f.backend)]
        return [
          ...own.map((b) => ({ name: b.type, config: mayReadConfig ? b.config : {}, isDefault: false })),
          ...defaults.filter((type) => !ownTypes.has(type)).map((type) => ({ name: type, config: {}, isDefault: true }))
        ]
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/backends/create", summary: "Configure a backend for the project", tag: "backends", access: { project: "admin" },
    request: BackendConfigRequest, response: BackendInfo,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const store = yield* StateStore
        const existing = yield* store.backends.get(ctx.projectName!, input.type).pipe(Effect.option)
        if (Option.isSome(existing)) return yield* Effect.fail(badRequest(`Project ${ctx.projectName} already has a ${excerpt(input.type)} backend; use backends/update`, ["body", "type"]))
        return yield* upsert(ctx.projectName!, input)
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/backends/update", summary: "Change a backend's configuration", tag: "backends", access: { project: "admin" },
    request: BackendConfigRequest, response: BackendInfo,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const store = yield* StateStore
        const existing = yield* store.backends.get(ctx.projectName!, input.type).pipe(Effect.option)
        if (Option.isNone(existing)) return yield* Effect.fail(notFound(`Project ${ctx.projectName} has no ${excerpt(input.type)} backend; use backends/create`))
        return yield* upsert(ctx.projectName!, input)
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/backends/delete", summary: "Remove backends from the project", tag: "backends", access: { project: "admin" },
    request: DeleteBackendsRequest, response: Schema.Struct({}),
    handler: (input, ctx) =>
      Effect.flatMap(StateStore, (store) => store.backends.delete(ctx.projectName!, input.backendsNames)).pipe(
        Effect.mapError(fromStateStore),
        Effect.as({})
      )
  })
]
