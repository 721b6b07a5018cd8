// /api/project/{p}/repos/*: repos initialised in a project (list, get, init, delete) and the
// content-addressed code upload. Code archives are streamed into the BlobStore, checked
// against the SHA-256 the client announced, size-limited, and stored once per hash.
import { createHash, randomUUID } from "node:crypto"
import { Context, Effect, Layer, Option, Schema, Stream } from "effect"
import { RunRepoData } from "../../domain/Job.ts"
import { BlobStore } from "../../ports/BlobStore.ts"
import { StateStore } from "../../ports/StateStore.ts"
import type { RepoRecord } from "../../ports/StateStore.ts"
import { authorizeProject } from "../Access.ts"
import { ApiError, badRequest, excerpt, fromStateStore, notFound, payloadTooLarge, serverError } from "../ApiError.ts"
import { jsonRoute, rawRoute } from "../Route.ts"
import type { RouteContext } from "../Route.ts"
import { fromParseError } from "../Router.ts"
import * as RepoCredentials from "../../secrets/RepoCredentials.ts"
import type { SecretCipherError } from "../../secrets/SecretCipher.ts"

const key = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.propertySignature(schema).pipe(Schema.fromKey(wire))
const optionalKey = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.optional(schema).pipe(Schema.fromKey(wire))

/** The cipher could not seal or open a repo's credentials (no key, or a different key than they were sealed with). */
const fromCipher = (e: SecretCipherError): ApiError =>
  new ApiError({ status: e.reason === "NoKey" ? 503 : 500, detail: [{ msg: `the repo's credentials: ${e.message}`, code: "server_error" }] })

// ---------------------------------------------------------------------------------------------
// Limits

/** The default largest code archive `upload_code` accepts: 64 MiB (upstream: 2 MiB). */
export const DEFAULT_CODE_UPLOAD_LIMIT = 64 * 1024 * 1024

/**
 * The largest code archive, in bytes, that `upload_code` accepts (upstream
 * `DSTACK_SERVER_CODE_UPLOAD_LIMIT`). Override it by adding `layerCodeUploadLimit(n)` to the
 * server's layers.
 */
export class CodeUploadLimit extends Context.Reference<CodeUploadLimit>()("@dstack-ts/core/server/CodeUploadLimit", {
  defaultValue: () => DEFAULT_CODE_UPLOAD_LIMIT
}) {}

/** Sets the code upload limit, e.g. `Layer.merge(blobs, layerCodeUploadLimit(8 * 1024 * 1024))`. */
export const layerCodeUploadLimit = (bytes: number): Layer.Layer<CodeUploadLimit> => Layer.succeed(CodeUploadLimit, bytes)

// ---------------------------------------------------------------------------------------------
// Schemas

/** Repo ids become part of blob keys: letters, digits, `.`, `_`, `-`, at most 128. */
export const RepoId = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, {
    message: () => "a repo id is 1–128 letters, digits, '.', '_' or '-', starting with a letter or digit"
  })
)

const SHA256 = /^[0-9a-f]{64}$/

/**
 * What a repo is (`repo_info`): the run repo data of the built-in types (`local`, `remote`,
 * `virtual`, validated field by field), or any object with a `repo_type` for a plugin's own.
 */
export const RepoInfo = Schema.Struct(
  { repo_type: Schema.String },
  Schema.Record({ key: Schema.String, value: Schema.Unknown })
)

export const RepoHead = Schema.Struct({ repoId: key(Schema.String, "repo_id"), repoInfo: key(Schema.Unknown, "repo_info") })
export const RepoHeadWithCreds = Schema.Struct({
  repoId: key(Schema.String, "repo_id"),
  repoInfo: key(Schema.Unknown, "repo_info"),
  repoCreds: optionalKey(Schema.NullOr(Schema.Unknown), "repo_creds")
})

export const InitRepoRequest = Schema.Struct({
  repoId: key(RepoId, "repo_id"),
  repoInfo: key(RepoInfo, "repo_info"),
  repoCreds: optionalKey(Schema.NullOr(Schema.Record({ key: Schema.String, value: Schema.Unknown })), "repo_creds")
})
export const GetRepoRequest = Schema.Struct({
  repoId: key(RepoId, "repo_id"),
  includeCreds: optionalKey(Schema.Boolean, "include_creds")
})
export const DeleteReposRequest = Schema.Struct({ reposIds: key(Schema.Array(RepoId), "repos_ids") })

/** The answer of `upload_code`. `stored` is false when the same hash was already there. */
export const UploadCodeResponse = Schema.Struct({
  repo_id: Schema.String,
  hash: Schema.String,
  size: Schema.Number,
  stored: Schema.Boolean
})

const BUILTIN_TYPES = new Set(["local", "remote", "virtual"])

/** Validates a built-in repo type's info and answers its wire form (snake_case, normalised). */
const normaliseInfo = (info: typeof RepoInfo.Type): Effect.Effect<unknown, ApiError> =>
  BUILTIN_TYPES.has(info.repo_type)
    ? Schema.decodeUnknown(RunRepoData, { errors: "all" })(info).pipe(
      Effect.flatMap((data) => Schema.encode(RunRepoData)(data)),
      Effect.mapError((e) => fromParseError(e, ["body", "repo_info"]))
    )
    : Effect.succeed(info)

// ---------------------------------------------------------------------------------------------
// Code storage

/** Where the archives of a repo live in the BlobStore. */
export const codePrefix = (project: string, repoId: string): string => `codes/${project}/${repoId}/`

const repoNotFound = (project: string, repoId: string) =>
  notFound(`Repo ${excerpt(repoId)} does not exist in project ${excerpt(project)}: call repos/init first`)

const getRepo = (project: string, repoId: string): Effect.Effect<RepoRecord, ApiError, StateStore> =>
  Effect.flatMap(StateStore, (s) => s.repos.get(project, repoId)).pipe(
    Effect.mapError((e) => (e.reason === "NotFound" ? repoNotFound(project, repoId) : fromStateStore(e)))
  )

const blobError = (e: { readonly message?: string | undefined; readonly reason: string }) =>
  serverError(`The blob store failed: ${e.message ?? e.reason}`, e)

/**
 * Counts and hashes bytes as they pass, failing with 413 as soon as they exceed `limit`, so an
 * oversize body is never read to its end.
 */
const meter = (limit: number) => {
  const hash = createHash("sha256")
  let size = 0
  const through = <E>(stream: Stream.Stream<Uint8Array, E>): Stream.Stream<Uint8Array, E | ApiError> =>
    Stream.mapEffect(stream, (chunk) => {
      size += chunk.length
      if (size > limit) {
        return Effect.fail(payloadTooLarge(`The code archive exceeds the upload limit of ${limit} bytes`))
      }
      hash.update(chunk)
      return Effect.succeed(chunk)
    })
  return { through, result: () => ({ size, hash: hash.digest("hex") }) }
}

const bodyStream = (body: ReadableStream<Uint8Array> | null): Stream.Stream<Uint8Array, ApiError> =>
  body === null
    ? Stream.empty
    : Stream.fromReadableStream({
      evaluate: () => body,
      onError: (cause) => badRequest(`Reading the request body failed: ${cause instanceof Error ? cause.message : String(cause)}`)
    })

interface UploadInput {
  readonly repoId: string | undefined
  readonly hash: string | undefined
  readonly body: Stream.Stream<Uint8Array, ApiError>
}

/**
 * The upload's fields and body. A raw body streams straight through; a multipart form is
 * parsed by the runtime after the body has passed the size meter (so at most `limit` bytes).
 */
const readUpload = (ctx: RouteContext, limit: number): Effect.Effect<UploadInput, ApiError> =>
  Effect.gen(function*() {
    const req = ctx.hono.req
    const query = { repoId: req.query("repo_id"), hash: req.query("hash") }
    const contentType = req.header("content-type") ?? ""
    if (!contentType.toLowerCase().startsWith("multipart/form-data")) {
      return { ...query, body: bodyStream(req.raw.body) }
    }
    // The form needs its whole body: collect it through the meter (413 past the limit).
    const m = meter(limit + 64 * 1024)
    const chunks: Array<Uint8Array> = []
    yield* Stream.runForEach(m.through(bodyStream(req.raw.body)), (c) => Effect.sync(() => chunks.push(c)))
    const form = yield* Effect.tryPromise({
      try: () => new Response(new Blob(chunks as Array<BlobPart>), { headers: { "content-type": contentType } }).formData(),
      catch: (cause) => badRequest(`The multipart body cannot be parsed: ${cause instanceof Error ? cause.message : String(cause)}`)
    })
    const file = form.get("file")
    if (file === null || typeof file === "string") {
      return yield* Effect.fail(badRequest("The multipart body needs a `file` part with the code archive", ["body", "file"]))
    }
    const field = (name: string) => {
      const v = form.get(name)
      return typeof v === "string" && v !== "" ? v : undefined
    }
    // Upstream names the file part after the hash.
    const named = SHA256.test(file.name) ? file.name : undefined
    return {
      repoId: field("repo_id") ?? query.repoId,
      hash: field("hash") ?? query.hash ?? named,
      body: bodyStream(file.stream() as ReadableStream<Uint8Array>)
    }
  })

const uploadCode = (ctx: RouteContext) =>
  Effect.gen(function*() {
    const project = ctx.projectName!
    const limit = yield* CodeUploadLimit
    const declared = Number(ctx.hono.req.header("content-length"))
    if (Number.isFinite(declared) && declared > limit + 64 * 1024) {
      return yield* Effect.fail(payloadTooLarge(`The code archive (${declared} bytes) exceeds the upload limit of ${limit} bytes`))
    }
    const input = yield* readUpload(ctx, limit)
    if (input.repoId === undefined || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(input.repoId)) {
      return yield* Effect.fail(
        badRequest(input.repoId === undefined ? "repo_id is required (query or form field)" : `repo_id ${excerpt(JSON.stringify(input.repoId))} is not a valid repo id`, ["query", "repo_id"])
      )
    }
    if (input.hash === undefined || !SHA256.test(input.hash)) {
      return yield* Effect.fail(
        badRequest(input.hash === undefined ? "hash is required: the SHA-256 of the archive, lowercase hex" : `hash ${excerpt(JSON.stringify(input.hash))} is not a lowercase hex SHA-256`, ["query", "hash"])
      )
    }
    const repoId = input.repoId
    const expected = input.hash
    yield* getRepo(project, repoId)
    const state = yield* StateStore
    const blobs = yield* BlobStore
    const existing = yield* state.codes.get(project, repoId, expected).pipe(
      Effect.map(Option.some),
      Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(Option.none())),
      Effect.mapError(fromStateStore)
    )
    if (Option.isSome(existing) && (yield* blobs.has(existing.value.blobKey).pipe(Effect.mapError(blobError)))) {
      return ctx.hono.json({ repo_id: repoId, hash: expected, size: existing.value.size, stored: false }, 200)
    }

    // A key of its own per upload: a failed or mismatching upload never touches a stored one.
    const blobKey = `${codePrefix(project, repoId)}${expected}/${randomUUID()}`
    const m = meter(limit)
    yield* blobs.put(blobKey, m.through(input.body), { contentType: "application/octet-stream", metadata: { repo_id: repoId } }).pipe(
      Effect.catchTag("BlobStoreError", (e) => Effect.fail(blobError(e)))
    )
    const { size, hash } = m.result()
    if (hash !== expected) {
      yield* blobs.delete(blobKey).pipe(Effect.ignore)
      return yield* Effect.fail(badRequest(`The uploaded code has SHA-256 ${hash} (${size} bytes), not the announced ${excerpt(expected)}`, ["query", "hash"]))
    }
    yield* state.codes.put({ project, repoId, hash, blobKey, size }).pipe(Effect.mapError(fromStateStore))
    // Two uploads of one hash at once: the first record wins, the other copy goes.
    const recorded = yield* state.codes.get(project, repoId, hash).pipe(Effect.mapError(fromStateStore))
    if (recorded.blobKey !== blobKey) yield* blobs.delete(blobKey).pipe(Effect.ignore)
    return ctx.hono.json({ repo_id: repoId, hash, size, stored: recorded.blobKey === blobKey }, 200)
  })

// ---------------------------------------------------------------------------------------------
// Routes

const toHead = (r: RepoRecord) => ({ repoId: r.repoId, repoInfo: r.info })

export const repoRoutes = [
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/repos/list", summary: "The repos initialised in the project", tag: "repos", access: { project: "user" },
    response: Schema.Array(RepoHead),
    handler: (_: void, ctx) =>
      Effect.flatMap(StateStore, (s) => s.repos.list(ctx.projectName!)).pipe(Effect.map((rs) => rs.map(toHead)), Effect.mapError(fromStateStore))
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/repos/get", summary: "A repo; its credentials only with include_creds, for project managers", tag: "repos",
    access: { project: "user" },
    request: GetRepoRequest, response: RepoHeadWithCreds,
    handler: (input, ctx) =>
      Effect.gen(function*() {
        const record = yield* getRepo(ctx.projectName!, input.repoId)
        if (!input.includeCreds) return toHead(record)
        // The credentials are for managers: the same check the router makes for a route's role.
        yield* authorizeProject(ctx.principal!, ctx.projectName!, "manager")
        const creds = yield* RepoCredentials.open(ctx.projectName!, input.repoId, record.creds).pipe(Effect.mapError(fromCipher))
        return { ...toHead(record), repoCreds: creds }
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/repos/init", summary: "Create or update a repo and its credentials", tag: "repos", access: { project: "user" },
    request: InitRepoRequest, response: Schema.Struct({}),
    handler: (input, ctx) =>
      Effect.gen(function*() {
        const info = yield* normaliseInfo(input.repoInfo)
        const s = yield* StateStore
        const creds = yield* RepoCredentials.seal(ctx.projectName!, input.repoId, input.repoCreds ?? null).pipe(Effect.mapError(fromCipher))
        yield* s.repos
          .upsert({ project: ctx.projectName!, repoId: input.repoId, type: input.repoInfo.repo_type, info, creds })
          .pipe(Effect.mapError(fromStateStore))
        return {}
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/repos/delete", summary: "Delete repos with their uploaded code", tag: "repos", access: { project: "user" },
    request: DeleteReposRequest, response: Schema.Struct({}),
    handler: (input, ctx) =>
      Effect.gen(function*() {
        const project = ctx.projectName!
        const s = yield* StateStore
        const blobs = yield* BlobStore
        for (const repoId of input.reposIds) yield* getRepo(project, repoId)
        yield* s.repos.delete(project, input.reposIds).pipe(Effect.mapError(fromStateStore))
        for (const repoId of input.reposIds) {
          yield* Stream.runForEach(blobs.list(codePrefix(project, repoId)), (k) => blobs.delete(k)).pipe(Effect.mapError(blobError))
        }
        return {}
      })
  }),
  rawRoute({
    method: "POST", path: "/api/project/:project_name/repos/upload_code", summary: "Upload a code archive keyed by its SHA-256", tag: "repos",
    access: { project: "user" },
    requestDescription:
      "The archive as the raw body (any content type but multipart) or as the `file` part of multipart/form-data; `repo_id` and `hash` (SHA-256, lowercase hex) as query parameters or form fields. 400 when the bytes do not hash to `hash`, 413 past the server's limit.",
    responseDescription: "{ repo_id, hash, size, stored }: stored is false when that hash was already uploaded.",
    handler: uploadCode
  })
]
