/**
 * Project secrets as the server keeps them: names and values checked as upstream checks them,
 * values encrypted by the SecretCipher before they reach the state store and decrypted only
 * for `secrets/get`, `create_or_update`'s answer and a job's hand-over to its runner.
 */
import { Context, Effect } from "effect"
import type { SecretRecord, StateStoreError, StateStoreService } from "../ports/StateStore.ts"
import { referencedNames, type Interpolated } from "./SecretReferences.ts"
import { SecretCipher, type SecretCipherError } from "./SecretCipher.ts"

/** Upstream's rules for a secret's name and value. */
export const SECRET_NAME = /^[A-Za-z0-9-_]{1,200}$/
export const SECRET_VALUE_MAX_LENGTH = 5000

/** Who besides global and project admins may manage a project's secrets. */
export class SecretsPolicy extends Context.Reference<SecretsPolicy>()("@dstack-ts/core/SecretsPolicy", {
  /** Upstream's `allow_managers_manage_secrets`, false by default. */
  defaultValue: (): { readonly allowManagers: boolean } => ({ allowManagers: false })
}) {}

/** A secret as the API answers it: the value only where the caller asked for it. */
export interface Secret {
  readonly id: string
  readonly name: string
  readonly value: string | null
}

/** Why a name or value is refused (the value itself is never quoted). */
export const checkSecret = (name: string, value?: string): string | undefined =>
  !SECRET_NAME.test(name)
    ? `Secret name should match regex '${SECRET_NAME.source}'`
    : value !== undefined && value.length > SECRET_VALUE_MAX_LENGTH
    ? `Secret value length must not exceed ${SECRET_VALUE_MAX_LENGTH}`
    : undefined

/** The record with its value decrypted. */
export const reveal = (record: SecretRecord): Effect.Effect<Secret, SecretCipherError> =>
  Effect.flatMap(SecretCipher, (cipher) =>
    Effect.map(cipher.decrypt(record.project, record.name, record.value), (value) => ({ id: record.id, name: record.name, value })))

/** Encrypts and stores the value (a new secret or a new value for one), answering it decrypted. */
export const set = (
  store: StateStoreService,
  project: string,
  name: string,
  value: string
): Effect.Effect<Secret, StateStoreError | SecretCipherError> =>
  Effect.gen(function* () {
    const cipher = yield* SecretCipher
    const sealed = yield* cipher.encrypt(project, name, value)
    const record = yield* store.secrets.upsert({ id: crypto.randomUUID(), project, name, value: sealed })
    return { id: record.id, name: record.name, value }
  })

/**
 * The values of the secrets a job's env and registry credentials refer to, for its runner; a
 * reference to a secret the project does not have fails naming it (never a value).
 */
export const forJob = (
  store: StateStoreService,
  project: string,
  spec: Interpolated
): Effect.Effect<Record<string, string>, StateStoreError | SecretCipherError | { readonly _tag: "MissingSecrets"; readonly message: string }> =>
  Effect.gen(function* () {
    const names = referencedNames(spec)
    if (names.length === 0) return {}
    const stored = new Map((yield* store.secrets.list(project)).map((r) => [r.name, r]))
    const missing = names.filter((n) => !stored.has(n))
    if (missing.length > 0) {
      return yield* Effect.fail({
        _tag: "MissingSecrets" as const,
        message: `the job refers to secret${missing.length > 1 ? "s" : ""} ${missing.join(", ")}, which project ${project} does not have (dstack secret set NAME VALUE)`
      })
    }
    const out: Record<string, string> = {}
    for (const name of names) out[name] = (yield* reveal(stored.get(name)!)).value!
    return out
  })
