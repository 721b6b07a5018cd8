/**
 * The server's secret cipher: project secrets are encrypted at rest with AES-256-GCM under a
 * server key that is never stored in the database (it comes from the server's options, the
 * `DSTACK_SERVER_SECRETS_KEY` environment variable, or a key file in the server directory made
 * on first start with mode 0600). Each value is bound to its project and name (additional
 * authenticated data), so a ciphertext copied to another row does not decrypt.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Context, Effect, Layer, Schema } from "effect"

/** Why encrypting or decrypting failed. Messages never contain a secret's value. */
export class SecretCipherError extends Schema.TaggedError<SecretCipherError>("@dstack-ts/core/SecretCipher/SecretCipherError")(
  "SecretCipherError",
  {
    reason: Schema.Literal("NoKey", "Undecryptable", "Invalid"),
    message: Schema.String,
    cause: Schema.optional(Schema.Defect)
  }
) {}

export interface SecretCipherService {
  /** Encrypts `plaintext` for the secret `name` of `project`: `v1:<iv>:<ciphertext>` (base64). */
  readonly encrypt: (project: string, name: string, plaintext: string) => Effect.Effect<string, SecretCipherError>
  /** Decrypts what `encrypt` wrote for the same project and name. */
  readonly decrypt: (project: string, name: string, stored: string) => Effect.Effect<string, SecretCipherError>
}

const noKey = (): Effect.Effect<never, SecretCipherError> =>
  Effect.fail(new SecretCipherError({
    reason: "NoKey",
    message: "this server has no secrets key: start it with `secrets: { keyFile }` or `secrets: { key }` (ServerOptions), or DSTACK_SERVER_SECRETS_KEY (`dstack server` keeps one in its server directory)"
  }))

/** The cipher of a server started without a key: every call fails `NoKey`, saying how to give one. */
export const unconfigured: SecretCipherService = { encrypt: () => noKey(), decrypt: () => noKey() }

/** The server's cipher; by default none is configured and secrets cannot be set or read. */
export class SecretCipher extends Context.Reference<SecretCipher>()("@dstack-ts/core/SecretCipher", {
  defaultValue: (): SecretCipherService => unconfigured
}) {}

/** The key length: AES-256. */
export const KEY_BYTES = 32
const IV_BYTES = 12
const FORMAT = "v1"

const toBase64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString("base64")
const fromBase64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, "base64"))
const aad = (project: string, name: string): Uint8Array<ArrayBuffer> => new TextEncoder().encode(`dstack-secret:${project}/${name}`)

/** Reads a key given as base64 (32 bytes), refusing anything else by its length, never by its content. */
export const parseKey = (text: string, from: string): Effect.Effect<Uint8Array, SecretCipherError> => {
  const bytes = fromBase64(text.trim())
  return bytes.length === KEY_BYTES && /^[A-Za-z0-9+/=\s]+$/.test(text)
    ? Effect.succeed(bytes)
    : Effect.fail(new SecretCipherError({ reason: "Invalid", message: `the secrets key from ${from} is not ${KEY_BYTES} bytes in base64 (make one with \`openssl rand -base64 32\`)` }))
}

/** A cipher over a 32-byte key. */
export const make = (key: Uint8Array): Effect.Effect<SecretCipherService, SecretCipherError> =>
  Effect.gen(function* () {
    if (key.length !== KEY_BYTES) {
      return yield* Effect.fail(new SecretCipherError({ reason: "Invalid", message: `a secrets key is ${KEY_BYTES} bytes, not ${key.length}` }))
    }
    const cryptoKey = yield* Effect.tryPromise({
      try: () => crypto.subtle.importKey("raw", new Uint8Array(key), { name: "AES-GCM" }, false, ["encrypt", "decrypt"]),
      catch: (cause) => new SecretCipherError({ reason: "Invalid", message: "the secrets key cannot be used for AES-GCM", cause })
    })
    return {
      encrypt: (project, name, plaintext) =>
        Effect.tryPromise({
          try: async () => {
            const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES))
            const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: aad(project, name) }, cryptoKey, new TextEncoder().encode(plaintext))
            return `${FORMAT}:${toBase64(iv)}:${toBase64(new Uint8Array(sealed))}`
          },
          catch: (cause) => new SecretCipherError({ reason: "Invalid", message: `cannot encrypt the secret ${name}`, cause })
        }),
      decrypt: (project, name, stored) => {
        const [format, iv, sealed] = stored.split(":")
        if (format !== FORMAT || iv === undefined || sealed === undefined) {
          return Effect.fail(new SecretCipherError({ reason: "Undecryptable", message: `the stored secret ${name} of project ${project} is not in a format this server reads` }))
        }
        return Effect.tryPromise({
          try: async () => {
            const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: fromBase64(iv) as Uint8Array<ArrayBuffer>, additionalData: aad(project, name) }, cryptoKey, fromBase64(sealed) as Uint8Array<ArrayBuffer>)
            return new TextDecoder().decode(plain)
          },
          // No cause: the foreign error says nothing useful and must not travel with values.
          catch: () => new SecretCipherError({ reason: "Undecryptable", message: `the stored secret ${name} of project ${project} does not decrypt with this server's key (was the key changed?)` })
        })
      }
    } satisfies SecretCipherService
  })

/**
 * The key in `file`, made (32 random bytes, base64, mode 0600, its folder created 0700) when it
 * does not exist. A key file that others may read is refused.
 */
export const loadOrCreateKeyFile = (file: string): Effect.Effect<Uint8Array, SecretCipherError> =>
  Effect.try({
    try: () => {
      fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
      try {
        fs.writeFileSync(file, `${toBase64(crypto.getRandomValues(new Uint8Array(KEY_BYTES)))}\n`, { mode: 0o600, flag: "wx" })
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
      }
      const mode = fs.statSync(file).mode & 0o777
      if (process.platform !== "win32" && (mode & 0o077) !== 0) {
        throw new Error(`the secrets key file ${file} may be read by others (mode ${mode.toString(8)}): chmod 600 it`)
      }
      return fs.readFileSync(file, "utf8")
    },
    catch: (cause) => new SecretCipherError({ reason: "Invalid", message: cause instanceof Error ? cause.message : `cannot read or create the secrets key file ${file}`, cause })
  }).pipe(Effect.flatMap((text) => parseKey(text, file)))

/** Where a server's secrets key comes from. */
export interface SecretsKeyOptions {
  /** The key itself: 32 bytes, or their base64. */
  readonly key?: string | Uint8Array | undefined
  /** A file holding the key in base64, made with mode 0600 on first start when missing. */
  readonly keyFile?: string | undefined
}

/**
 * The cipher for a server: `key`, else `keyFile`, else the `DSTACK_SERVER_SECRETS_KEY`
 * environment variable; with none, the unconfigured cipher (secrets refused, saying why).
 */
export const layer = (options: SecretsKeyOptions = {}): Layer.Layer<SecretCipher, SecretCipherError> => {
  const fromEnv = typeof process !== "undefined" ? process.env.DSTACK_SERVER_SECRETS_KEY : undefined
  const key: Effect.Effect<Uint8Array | undefined, SecretCipherError> =
    options.key instanceof Uint8Array ? Effect.succeed(options.key)
    : typeof options.key === "string" ? parseKey(options.key, "the server's `secrets.key` option")
    : options.keyFile !== undefined ? loadOrCreateKeyFile(options.keyFile)
    : fromEnv !== undefined && fromEnv !== "" ? parseKey(fromEnv, "DSTACK_SERVER_SECRETS_KEY")
    : Effect.succeed(undefined)
  return Layer.effect(SecretCipher, Effect.flatMap(key, (k) => (k === undefined ? Effect.succeed(unconfigured) : make(k))))
}
