// Repo credentials at rest: sealed under the server's secrets key and bound to their repo;
// stored as given by a server without a key; a row sealed under another key is refused by name
// of the cause, never opened as garbage.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as RepoCredentials from "../../src/secrets/RepoCredentials.ts"
import * as SecretCipher from "../../src/secrets/SecretCipher.ts"

const CREDS = { clone_url: "https://example.com/x.git", oauth_token: "tok-canary-1", private_key: null }
const withKey = (key: Uint8Array) => Effect.provide(SecretCipher.layer({ key }))

describe("RepoCredentials", () => {
  it.effect("seals under the key (the token is not in the stored value) and opens back", () =>
    Effect.gen(function* () {
      const key = crypto.getRandomValues(new Uint8Array(32))
      const stored = yield* RepoCredentials.seal("main", "repo-a", CREDS).pipe(withKey(key))
      expect(JSON.stringify(stored)).not.toContain("tok-canary-1")
      expect(yield* RepoCredentials.open("main", "repo-a", stored).pipe(withKey(key))).toEqual(CREDS)
      // Bound to its repo: the same value under another repo id does not open.
      const moved = yield* Effect.exit(RepoCredentials.open("main", "repo-b", stored).pipe(withKey(key)))
      expect(Exit.isFailure(moved)).toBe(true)
      // Another key: refused with the cipher's reason.
      const other = yield* Effect.flip(RepoCredentials.open("main", "repo-a", stored).pipe(withKey(crypto.getRandomValues(new Uint8Array(32)))))
      expect(other.reason).toBe("Undecryptable")
      // No key at all: NoKey, saying how to give one.
      const none = yield* Effect.flip(RepoCredentials.open("main", "repo-a", stored))
      expect(none.reason).toBe("NoKey")
    }))

  it.effect("without a key stores the credentials as given; plain rows and null read as they are", () =>
    Effect.gen(function* () {
      expect(yield* RepoCredentials.seal("main", "repo-a", CREDS)).toEqual(CREDS)
      expect(yield* RepoCredentials.seal("main", "repo-a", null)).toBeNull()
      const key = crypto.getRandomValues(new Uint8Array(32))
      expect(yield* RepoCredentials.open("main", "repo-a", CREDS).pipe(withKey(key))).toEqual(CREDS)
      expect(yield* RepoCredentials.open("main", "repo-a", null).pipe(withKey(key))).toBeNull()
    }))
})
