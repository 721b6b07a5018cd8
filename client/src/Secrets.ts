/**
 * Project secrets through the API (`/api/project/{p}/secrets/*`, upstream's routes): the Effect
 * methods over a `DstackApi`, used by the Promise client's `secrets`. Managing secrets takes a
 * project admin (or a global admin); `list` answers names only, `get` the value.
 */
import { Effect, Schema } from "effect"
import type { ClientError } from "./ClientError.ts"
import type { DstackApiShape } from "./DstackApi.ts"

/** Upstream's `Secret`: `value` is null where the server does not show it (lists). */
export const Secret = Schema.Struct({ id: Schema.String, name: Schema.String, value: Schema.NullOr(Schema.String) })
export type Secret = typeof Secret.Type

export interface SecretsApi {
  /** `secrets/list`: the project's secrets, newest first, without values. */
  readonly list: () => Effect.Effect<ReadonlyArray<Secret>, ClientError>
  /** `secrets/get`: one secret with its value; fails with reason NotFound when there is none. */
  readonly get: (name: string) => Effect.Effect<Secret, ClientError>
  /** `secrets/create_or_update`: sets the value (a new secret or a new value). */
  readonly set: (name: string, value: string) => Effect.Effect<Secret, ClientError>
  /** `secrets/delete`: deletes all of `names`, or none when one does not exist. */
  readonly delete: (names: ReadonlyArray<string>) => Effect.Effect<void, ClientError>
}

/**
 * The secrets methods of the client's project.
 *
 * @example
 * const secrets = Secrets.make(api)
 * yield* secrets.set("HF_TOKEN", token)   // then `env: { HF_TOKEN: "${{ secrets.HF_TOKEN }}" }`
 */
export const make = (api: DstackApiShape): SecretsApi => ({
  list: () => api.call({ method: "secrets.list", path: api.projectPath("secrets/list"), response: Schema.Array(Secret), idempotent: true }),
  get: (name) => api.call({ method: "secrets.get", path: api.projectPath("secrets/get"), response: Secret, idempotent: true }, { name }),
  set: (name, value) =>
    api.call({ method: "secrets.set", path: api.projectPath("secrets/create_or_update"), response: Secret, idempotent: false }, { name, value }),
  delete: (names) =>
    Effect.asVoid(api.call({ method: "secrets.delete", path: api.projectPath("secrets/delete"), response: Schema.Null, idempotent: false }, { secrets_names: [...names] }))
})
