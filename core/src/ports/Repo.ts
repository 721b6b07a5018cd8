/**
 * The Repo port (code source): on the client, `pack` turns a source (a local directory, a git
 * checkout with uncommitted changes, files given in code) into repo data plus a code archive
 * keyed by its hash; on the runner, `materialize` rebuilds the working tree from them.
 */
import { collectBytes } from "../internal/bytes.ts"
import { Context, Effect, Layer, Schema, Stream } from "effect"
import type { RunRepoData } from "../domain/Job.ts"

// ---------------------------------------------------------------------------------------------
// Errors

export const RepoErrorReason = Schema.Literal("NotFound", "PermissionDenied", "Invalid", "Transport", "Unknown")
export type RepoErrorReason = typeof RepoErrorReason.Type

/**
 * The one error of the Repo port.
 * - `NotFound`: the directory, the git remote or the commit does not exist.
 * - `Invalid`: a source of the wrong type, a path escaping the tree, a corrupt archive.
 * - `Transport`: cloning from the remote failed on the network; retryable.
 */
export class RepoError extends Schema.TaggedError<RepoError>("@dstack-ts/core/Repo/RepoError")("RepoError", {
  module: Schema.String,
  method: Schema.String,
  reason: RepoErrorReason,
  message: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Defect)
}) {
  get isRetryable(): boolean {
    return isRetryable(this)
  }
}

export const isRetryable = (error: RepoError): boolean => error.reason === "Transport"

export const fail = (
  module: string,
  method: string,
  reason: RepoErrorReason,
  message: string,
  cause?: unknown
): Effect.Effect<never, RepoError> =>
  Effect.fail(new RepoError({ module, method, reason, message, ...(cause === undefined ? {} : { cause }) }))

// ---------------------------------------------------------------------------------------------
// Data

/**
 * What to pack. `type` picks the repo implementation (`local`, `remote`, `virtual`, or a
 * plugin's own); the other fields are the implementation's, e.g. `{ type: "local", dir }` or
 * `{ type: "virtual", files: { "train.py": "..." } }`.
 */
export interface RepoSource {
  readonly type: string
  readonly [field: string]: unknown
}

/** The result of `pack`: what the run records, and the bytes uploaded once per hash. */
export interface PackedCode {
  readonly repoData: RunRepoData
  /** SHA-256 of the archive, lowercase hex: the `repo_code_hash` of the job spec. */
  readonly codeHash: string
  /** The archive (a tarball, a git diff …): whatever `materialize` of the same type reads. */
  readonly archive: Uint8Array
}

/**
 * Credentials for a private git repo (upstream's `repo_creds`): the URL to clone instead of the
 * repo's, an SSH private key, or an OAuth/personal token for HTTPS.
 */
export interface RepoCredentials {
  readonly cloneUrl?: string | undefined
  readonly privateKey?: string | undefined
  readonly oauthToken?: string | undefined
}

/** What the runner receives: the repo data and the archive, possibly streamed, and the repo's credentials. */
export interface CodeToMaterialize {
  readonly repoData: RunRepoData
  readonly archive: Uint8Array | Stream.Stream<Uint8Array, RepoError>
  /** For a repo cloned on the runner: never logged nor written into the working tree. */
  readonly credentials?: RepoCredentials | undefined
}

// ---------------------------------------------------------------------------------------------
// The port

export interface Repo {
  /** The repo type it packs and materializes. */
  readonly type: string
  pack(source: RepoSource): Effect.Effect<PackedCode, RepoError>
  /** Writes the working tree into `dir` (which exists and is empty). */
  materialize(code: CodeToMaterialize, dir: string): Effect.Effect<void, RepoError>
}

/** The installed repo types (the plugin host provides them). */
export class Repos extends Context.Tag("@dstack-ts/core/Repo")<Repos, ReadonlyMap<string, Repo>>() {}

/** Provides a fixed set of repo implementations. */
export const layer = (repos: ReadonlyArray<Repo>): Layer.Layer<Repos> =>
  Layer.succeed(Repos, new Map(repos.map((r) => [r.type, r])))

/** Collects an archive into one array. */
export const archiveBytes = (archive: CodeToMaterialize["archive"]): Effect.Effect<Uint8Array, RepoError> => collectBytes(archive)

/**
 * Checks a relative path inside a working tree: no absolute paths, no `..`, no empty segments.
 * Every implementation that writes files from an archive must apply it.
 */
export const checkTreePath = (
  module: string,
  path: string,
  method = "materialize"
): Effect.Effect<string, RepoError> => {
  const segments = path.split("/")
  return path === "" || path.startsWith("/") || /^[A-Za-z]:/.test(path) || path.includes("\\") ||
      segments.some((s) => s === "" || s === "." || s === "..")
    ? fail(module, method, "Invalid", `file path ${JSON.stringify(path)} is not a plain relative path inside the repo`)
    : Effect.succeed(path)
}

// ---------------------------------------------------------------------------------------------
// Virtual files

const VirtualArchive = Schema.parseJson(Schema.Struct({
  files: Schema.Record({ key: Schema.String, value: Schema.String })
}))

const toBase64 = (bytes: Uint8Array): string => {
  let s = ""
  for (const b of bytes) s += String.fromCharCode(b)
  return btoa(s)
}
const fromBase64 = (text: string): Uint8Array => Uint8Array.from(atob(text), (c) => c.charCodeAt(0))

const sha256Hex = (bytes: Uint8Array): Effect.Effect<string> =>
  Effect.promise(async () => {
    const d = new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>))
    return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("")
  })

/**
 * The `virtual` repo: files given in code (`{ type: "virtual", files: { "a.py": "print(1)" } }`,
 * values as strings or bytes). The archive is canonical JSON, so equal files give equal hashes;
 * `materialize` writes them with `node:fs` (Node and Deno).
 */
export const virtual: Repo = {
  type: "virtual",
  pack: (source) =>
    Effect.gen(function*() {
      const files = source.files
      if (source.type !== "virtual" || typeof files !== "object" || files === null) {
        return yield* fail("virtual", "pack", "Invalid", "a virtual repo source needs { type: \"virtual\", files: { path: content } }")
      }
      const encoded: Record<string, string> = {}
      for (const path of Object.keys(files).sort()) {
        yield* checkTreePath("virtual", path, "pack")
        const value = (files as Record<string, unknown>)[path]
        if (typeof value !== "string" && !(value instanceof Uint8Array)) {
          return yield* fail("virtual", "pack", "Invalid", `file ${JSON.stringify(path)} must be a string or a Uint8Array`)
        }
        encoded[path] = toBase64(typeof value === "string" ? new TextEncoder().encode(value) : value)
      }
      const archive = new TextEncoder().encode(JSON.stringify({ files: encoded }))
      return { repoData: { repoType: "virtual" as const }, codeHash: yield* sha256Hex(archive), archive }
    }),
  materialize: (code, dir) =>
    Effect.gen(function*() {
      const bytes = yield* archiveBytes(code.archive)
      const parsed = yield* Schema.decodeUnknown(VirtualArchive)(new TextDecoder().decode(bytes)).pipe(
        Effect.mapError((cause) =>
          new RepoError({ module: "virtual", method: "materialize", reason: "Invalid", message: "the archive is not a virtual repo archive", cause })
        )
      )
      const [fs, path] = yield* Effect.promise(() => Promise.all([import("node:fs/promises"), import("node:path")]))
      for (const [file, content] of Object.entries(parsed.files)) {
        yield* checkTreePath("virtual", file)
        const target = path.join(dir, ...file.split("/"))
        yield* Effect.tryPromise({
          try: async () => {
            await fs.mkdir(path.dirname(target), { recursive: true })
            await fs.writeFile(target, fromBase64(content))
          },
          catch: (cause) =>
            new RepoError({
              module: "virtual",
              method: "materialize",
              reason: (cause as { code?: string }).code === "EACCES" ? "PermissionDenied" : "Unknown",
              message: `cannot write ${target}: ${cause instanceof Error ? cause.message : String(cause)}`,
              cause
            })
        })
      }
    })
}
