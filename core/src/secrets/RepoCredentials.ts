/**
 * A remote repo's credentials (`repo_creds` of repos/init: an OAuth token or an SSH private
 * key) at rest: sealed by the server's SecretCipher before they reach the state store, bound
 * to their project and repo, and opened only for the runner's clone and for a manager's
 * `repos/get` with `include_creds`. A server started without a secrets key stores them as
 * given (as it did before keys existed); rows written that way are read as they are.
 */
import { Effect } from "effect"
import { SecretCipher, type SecretCipherError, unconfigured } from "./SecretCipher.ts"

/** The one field of a sealed row; no credential object of upstream's has it. */
const SEALED = "dstack_sealed"

/** The name the ciphertext is bound to (secret names cannot hold `:`, so none collides). */
const boundName = (repoId: string) => `repo_creds:${repoId}`

/** What to store for `creds` of the repo `repoId` of `project`. */
export const seal = (project: string, repoId: string, creds: unknown | null): Effect.Effect<unknown | null, SecretCipherError> =>
  creds === null || creds === undefined
    ? Effect.succeed(null)
    : Effect.flatMap(SecretCipher, (cipher) =>
      cipher === unconfigured
        ? Effect.succeed(creds)
        : Effect.map(cipher.encrypt(project, boundName(repoId), JSON.stringify(creds)), (sealed) => ({ [SEALED]: sealed })))

/** The credentials a stored value holds (what `seal` was given). */
export const open = (project: string, repoId: string, stored: unknown | null): Effect.Effect<unknown | null, SecretCipherError> => {
  const sealed = typeof stored === "object" && stored !== null ? (stored as Record<string, unknown>)[SEALED] : undefined
  if (typeof sealed !== "string") return Effect.succeed(stored ?? null)
  return Effect.flatMap(SecretCipher, (cipher) => Effect.map(cipher.decrypt(project, boundName(repoId), sealed), (text) => JSON.parse(text) as unknown))
}
