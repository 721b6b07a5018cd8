// /api/project/{p}/secrets/*: a project's secrets, as upstream names and shapes them. Managing
// secrets takes a global or project admin (project managers too when the server allows it,
// upstream's `allow_managers_manage_secrets`); `list` answers names only, `get` and
// `create_or_update` the value. No answer, error or log line carries a value otherwise.
import { Effect, Schema } from "effect"
import { StateStore } from "../../ports/StateStore.ts"
import { checkSecret, reveal, SECRET_NAME, SecretsPolicy, set } from "../../secrets/ProjectSecrets.ts"
import type { SecretCipherError } from "../../secrets/SecretCipher.ts"
import { authorizeProject } from "../Access.ts"
import { ApiError, badRequest, excerpt, fromStateStore, notFound } from "../ApiError.ts"
import type { RouteContext } from "../Route.ts"
import { jsonRoute } from "../Route.ts"

/** Upstream's `Secret`: `value` is null where it is not shown. */
export const SecretWire = Schema.Struct({ id: Schema.String, name: Schema.String, value: Schema.NullOr(Schema.String) })

export const GetSecretRequest = Schema.Struct({ name: Schema.String })
export const CreateOrUpdateSecretRequest = Schema.Struct({ name: Schema.String, value: Schema.String })
export const DeleteSecretsRequest = Schema.Struct({
  secretsNames: Schema.propertySignature(Schema.Array(Schema.String)).pipe(Schema.fromKey("secrets_names"))
})

/** Global and project admins; project managers when the server's policy allows them. */
const mayManage = (ctx: RouteContext) =>
  Effect.flatMap(SecretsPolicy, (policy) =>
    policy.allowManagers ? Effect.void : Effect.asVoid(authorizeProject(ctx.principal!, ctx.projectName!, "admin")))

const fromCipher = (e: SecretCipherError): ApiError =>
  e.reason === "NoKey"
    ? new ApiError({ status: 503, detail: [{ msg: e.message, code: "server_error" }] })
    : new ApiError({ status: 500, detail: [{ msg: e.message, code: "server_error" }] })

const secretNotFound = (project: string, name: string) => notFound(`Secret ${excerpt(name)} does not exist in project ${excerpt(project)}`)

export const secretRoutes = [
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/secrets/list", summary: "The project's secrets, names only", tag: "secrets", access: { project: "manager" },
    response: Schema.Array(SecretWire),
    handler: (_: void, ctx) =>
      Effect.zipRight(
        mayManage(ctx),
        Effect.flatMap(StateStore, (store) => store.secrets.list(ctx.projectName!)).pipe(
          Effect.mapError(fromStateStore),
          Effect.map((records) => records.map((r) => ({ id: r.id, name: r.name, value: null })))
        )
      )
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/secrets/get", summary: "A secret with its value", tag: "secrets", access: { project: "manager" },
    request: GetSecretRequest, response: SecretWire,
    handler: (input, ctx) =>
      Effect.zipRight(
        mayManage(ctx),
        Effect.flatMap(StateStore, (store) => store.secrets.get(ctx.projectName!, input.name)).pipe(
          Effect.mapError((e) => (e.reason === "NotFound" ? secretNotFound(ctx.projectName!, input.name) : fromStateStore(e))),
          Effect.flatMap((record) => Effect.mapError(reveal(record), fromCipher))
        )
      )
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/secrets/create_or_update", summary: "Set a secret's value", tag: "secrets", access: { project: "manager" },
    request: CreateOrUpdateSecretRequest, response: SecretWire,
    handler: (input, ctx) =>
      Effect.zipRight(
        mayManage(ctx),
        Effect.suspend(() => {
          const problem = checkSecret(input.name, input.value)
          if (problem !== undefined) return Effect.fail(badRequest(problem, ["body", SECRET_NAME.test(input.name) ? "value" : "name"]))
          return Effect.flatMap(StateStore, (store) => set(store, ctx.projectName!, input.name, input.value)).pipe(
            Effect.mapError((e) => (e._tag === "SecretCipherError" ? fromCipher(e) : fromStateStore(e)))
          )
        })
      )
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/secrets/delete", summary: "Delete secrets by name (all or none)", tag: "secrets", access: { project: "manager" },
    request: DeleteSecretsRequest, response: Schema.Null,
    handler: (input, ctx) =>
      Effect.zipRight(
        mayManage(ctx),
        Effect.flatMap(StateStore, (store) => store.secrets.delete(ctx.projectName!, input.secretsNames)).pipe(
          Effect.mapError(fromStateStore),
          Effect.as(null)
        )
      )
  })
]
