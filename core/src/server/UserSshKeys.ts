/**
 * Each user's SSH key pair, as upstream keeps one: made by the server (RSA 2048, the private
 * key in PEM, the public one as an OpenSSH line ending in the user's name), stored with the
 * user, and handed to that user by `get_my_user` so upstream's CLI (UserSSHKeyManager) can
 * attach through the server's SSH proxy with it.
 */
import { generateKeyPair } from "node:crypto"
import { Effect } from "effect"
import { StateStore, StateStoreError, type UserSshKeyPair } from "../ports/StateStore.ts"

/** SSH's `string`/`mpint` wire encoding: a 4-byte length, then the bytes. */
const sshString = (bytes: Buffer): Buffer => {
  const len = Buffer.alloc(4)
  len.writeUInt32BE(bytes.length)
  return Buffer.concat([len, bytes])
}
/** A positive big-endian integer as an `mpint`: a leading zero byte when its top bit is set. */
const mpint = (unsigned: Buffer): Buffer => sshString(unsigned[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), unsigned]) : unsigned)

/** The OpenSSH public key line (`ssh-rsa AAAA… comment`) of an RSA public key given as a JWK. */
export const opensshRsaPublicKey = (jwk: { readonly n: string; readonly e: string }, comment: string): string => {
  const blob = Buffer.concat([
    sshString(Buffer.from("ssh-rsa")),
    mpint(Buffer.from(jwk.e, "base64url")),
    mpint(Buffer.from(jwk.n, "base64url"))
  ])
  return `ssh-rsa ${blob.toString("base64")} ${comment}\n`
}

/** Makes a fresh key pair for `username` (the comment of its public key, as upstream's). */
export const generateUserSshKey = (username: string): Effect.Effect<UserSshKeyPair, StateStoreError> =>
  Effect.async<UserSshKeyPair, StateStoreError>((resume) => {
    generateKeyPair("rsa", { modulusLength: 2048 }, (err, publicKey, privateKey) => {
      if (err) {
        resume(Effect.fail(new StateStoreError({ module: "@dstack-ts/core/UserSshKeys", method: "generateUserSshKey", reason: "Unknown", message: `cannot make an SSH key pair: ${err.message}`, cause: err })))
        return
      }
      const jwk = publicKey.export({ format: "jwk" }) as { n: string; e: string }
      // PKCS#1 PEM: read by OpenSSH and by ssh2 alike.
      const pem = privateKey.export({ type: "pkcs1", format: "pem" }).toString()
      resume(Effect.succeed({ publicKey: opensshRsaPublicKey(jwk, username), privateKey: pem }))
    })
  })

/**
 * The user's key pair, made and stored on first use (users created before keys existed, or by
 * a path that does not make one). Two servers asking at once end with the same stored pair.
 */
export const userSshKey = (username: string): Effect.Effect<UserSshKeyPair, StateStoreError, StateStore> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const stored = yield* store.users.getSshKey(username)
    if (stored !== null) return stored
    const fresh = yield* generateUserSshKey(username)
    return yield* store.users.setSshKey(username, fresh, { onlyIfMissing: true })
  })

/** Replaces the user's key pair with a fresh one (upstream `refresh_ssh_key`). */
export const refreshUserSshKey = (username: string): Effect.Effect<UserSshKeyPair, StateStoreError, StateStore> =>
  Effect.gen(function* () {
    const store = yield* StateStore
    // Fails NotFound for an unknown user before spending time on a key.
    yield* store.users.getSshKey(username)
    const fresh = yield* generateUserSshKey(username)
    return yield* store.users.setSshKey(username, fresh)
  })
