/**
 * /api/stacks/*: stacks over HTTP. A push is `frames/create` (declares the attachments),
 * one streamed `PUT …/attachments/{index}` per attachment (raw body straight into the
 * BlobStore), then `frames/commit`, which moves the stack's head. Reads (`get`, `list`,
 * `pull`, the attachment download) work without a token for public stacks.
 */
import { randomUUID } from "node:crypto"
import { Effect, Option, Schema, Stream } from "effect"
import { getCookie } from "hono/cookie"
import { BlobStore } from "../../ports/BlobStore.ts"
import { StateStore } from "../../ports/StateStore.ts"
import type { StackAttachment, StackFrameRecord, StackRecord, StateStoreError } from "../../ports/StateStore.ts"
import { PluginHost } from "../../plugin/PluginHost.ts"
import { Access } from "../../server/Access.ts"
import type { Principal } from "../../server/Access.ts"
import { ApiError, badRequest, forbidden, fromStateStore, notFoundPage as notFound, payloadTooLarge, serverError, unauthenticatedPage as unauthenticated } from "../../server/ApiError.ts"
import { jsonRoute, rawRoute } from "../../server/Route.ts"
import type { RouteContext } from "../../server/Route.ts"
import * as AutoHandler from "../AutoHandler.ts"
import * as Codec from "../../ports/Codec.ts"
import { formatStackPath, invalidStackName, paramsMatch, parseStackPath } from "./StackName.ts"
import type { StackPath } from "./StackName.ts"
import { maybeSweepPendingFrames } from "./PendingFrames.ts"
import { BodyReadFailed, formatBytes, StackUploadLimit, uploadBody, UploadTooLarge } from "./UploadBody.ts"

const key = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.propertySignature(schema).pipe(Schema.fromKey(wire))
const optionalKey = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.optional(schema).pipe(Schema.fromKey(wire))

/** The cookie the viewer keeps a token in (set by `?token=` on a page). */
export const TOKEN_COOKIE = "dstack_token"

// ---------------------------------------------------------------------------------------------
// Schemas

export const Access_ = Schema.Literal("public", "private")
const Params = Schema.Record({ key: Schema.String, value: Schema.Unknown })

/** A stack as the wire names it: `owner/name` (a leading `/` is allowed). */
export const StackRef = Schema.String.pipe(
  Schema.filter((s) => {
    const p = parseStackPath(s)
    return typeof p === "string" ? p : true
  })
)

export const AttachmentDeclaration = Schema.Struct({
  description: Schema.optional(Schema.NullOr(Schema.String)),
  params: Schema.optional(Params),
  contentType: key(Schema.String, "content_type"),
  application: Schema.String,
  metadata: Schema.optional(Params)
})

export const CreateFrameRequest = Schema.Struct({
  stack: StackRef,
  access: Schema.optional(Access_),
  message: Schema.optional(Schema.NullOr(Schema.String)),
  params: Schema.optional(Params),
  attachments: Schema.Array(AttachmentDeclaration).pipe(Schema.minItems(1, { message: () => "a frame needs at least one attachment" }))
})
export const CommitFrameRequest = Schema.Struct({ frameId: key(Schema.String, "frame_id"), message: Schema.optional(Schema.NullOr(Schema.String)) })
export const GetStackRequest = Schema.Struct({ stack: StackRef, framesLimit: optionalKey(Schema.Int.pipe(Schema.between(1, 1000)), "frames_limit") })
export const PullRequest = Schema.Struct({ stack: StackRef, frameId: optionalKey(Schema.String, "frame_id"), params: Schema.optional(Params) })
export const StackOnlyRequest = Schema.Struct({ stack: StackRef })
export const UpdateStackRequest = Schema.Struct({ stack: StackRef, access: Access_ })
export const DefaultAccessRequest = Schema.Struct({ access: Access_ })

const AttachmentInfo = Schema.Struct({
  index: Schema.Number,
  description: Schema.NullOr(Schema.String),
  params: Params,
  content_type: Schema.String,
  application: Schema.String,
  metadata: Params,
  size: Schema.NullOr(Schema.Number)
})
export const FrameInfo = Schema.Struct({
  id: Schema.String,
  message: Schema.NullOr(Schema.String),
  params: Params,
  created_by: Schema.String,
  created_at: Schema.String,
  committed_at: Schema.NullOr(Schema.String),
  attachments: Schema.Array(AttachmentInfo)
})
export const StackSummary = Schema.Struct({
  stack: Schema.String,
  owner: Schema.String,
  name: Schema.String,
  access: Access_,
  head: Schema.NullOr(Schema.String),
  updated_at: Schema.String
})
export const StackInfo = Schema.Struct({
  ...StackSummary.fields,
  head_frame: Schema.NullOr(FrameInfo),
  frames: Schema.Array(FrameInfo)
})
export const CreateFrameResponse = Schema.Struct({ frame_id: Schema.String, stack: Schema.String, attachments: Schema.Number })
export const CommitFrameResponse = Schema.Struct({ frame_id: Schema.String, stack: Schema.String, url: Schema.String })
export const PullResponse = Schema.Struct({
  stack: Schema.String,
  frame_id: Schema.String,
  attachment: AttachmentInfo,
  download_path: Schema.String
})

// ---------------------------------------------------------------------------------------------
// Helpers

const stateError = (e: StateStoreError) => fromStateStore(e)
const blobError = (e: { readonly message?: string | undefined; readonly reason: string }) =>
  serverError(`The blob store failed: ${e.message ?? e.reason}`, e)

/** The caller's token: the Authorization header, else the viewer's cookie. */
export const requestToken = (ctx: RouteContext): string | undefined => {
  const header = ctx.hono.req.header("authorization")
  const m = header ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null
  return m ? m[1].trim() : getCookie(ctx.hono, TOKEN_COOKIE)
}

/** The caller when a token is sent; a token that belongs to no active user is a 401. */
export const optionalPrincipal = (ctx: RouteContext): Effect.Effect<Principal | undefined, ApiError, Access> =>
  Effect.gen(function*() {
    if (ctx.principal !== undefined) return ctx.principal
    const token = requestToken(ctx)
    if (token === undefined) return undefined
    const access = yield* Access
    const principal = yield* access.authenticate(token)
    if (principal === undefined) return yield* Effect.fail(unauthenticated("Invalid token"))
    return principal
  })

const requirePrincipal = (ctx: RouteContext) =>
  Effect.flatMap(optionalPrincipal(ctx), (p) => (p === undefined ? Effect.fail(unauthenticated()) : Effect.succeed(p)))

export const pathOf = (stack: string): Effect.Effect<StackPath, ApiError> => {
  const p = parseStackPath(stack)
  return typeof p === "string" ? Effect.fail(badRequest(p, ["body", "stack"])) : Effect.succeed(p)
}

const canRead = (s: StackRecord, p: Principal | undefined) =>
  s.access === "public" || (p !== undefined && (p.username === s.owner || p.globalRole === "admin"))
const canWrite = (owner: string, p: Principal) => p.username === owner || p.globalRole === "admin"

const stackNotFound = (path: StackPath) => notFound(`Stack ${formatStackPath(path)} does not exist`)

/** The stack if the caller may read it: 404 when missing, 401/403 when private to someone else. */
export const readableStack = (path: StackPath, principal: Principal | undefined) =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const stack = yield* store.stacks.get(path.owner, path.name).pipe(
      Effect.mapError((e) => (e.reason === "NotFound" ? stackNotFound(path) : stateError(e)))
    )
    if (!canRead(stack, principal)) {
      return yield* Effect.fail(
        principal === undefined
          ? unauthenticated(`Stack ${formatStackPath(path)} is private: send its owner's token`)
          : forbidden(`Stack ${formatStackPath(path)} is private to ${path.owner}`)
      )
    }
    return stack
  })

const ownedStack = (path: StackPath, principal: Principal) =>
  Effect.gen(function*() {
    if (!canWrite(path.owner, principal)) {
      return yield* Effect.fail(forbidden(`Only ${path.owner} (or an admin) can change stack ${formatStackPath(path)}`))
    }
    const store = yield* StateStore
    return yield* store.stacks.get(path.owner, path.name).pipe(
      Effect.mapError((e) => (e.reason === "NotFound" ? stackNotFound(path) : stateError(e)))
    )
  })

const attachmentInfo = (a: StackAttachment, index: number) => ({
  index,
  description: a.description,
  params: a.params,
  content_type: a.contentType,
  application: a.application,
  metadata: a.metadata,
  size: a.size
})

export const frameInfo = (f: StackFrameRecord) => ({
  id: f.id,
  message: f.message,
  params: f.params,
  created_by: f.createdBy,
  created_at: f.createdAt.toISOString(),
  committed_at: f.committedAt === null ? null : f.committedAt.toISOString(),
  attachments: f.attachments.map(attachmentInfo)
})

const summary = (s: StackRecord) => ({
  stack: `${s.owner}/${s.name}`,
  owner: s.owner,
  name: s.name,
  access: s.access,
  head: s.head,
  updated_at: s.updatedAt.toISOString()
})

/** Where a frame's attachments live in the BlobStore (`/` in the name becomes `~`, which names never hold). */
export const framePrefix = (path: StackPath, frameId: string) => `${stackPrefix(path)}${frameId}/`
const stackPrefix = (path: StackPath) => `stacks/${path.owner}/${path.name.replaceAll("/", "~")}/`

/** The URL of a stack's page. */
export const viewerPath = (path: StackPath) => `/stacks/${path.owner}/${path.name}`

/** The frame to read: the given one (of this stack, committed) or the head. */
export const frameToRead = (stack: StackRecord, frameId: string | undefined) =>
  Effect.gen(function*() {
    const store = yield* StateStore
    const id = frameId ?? stack.head
    const full = `${stack.owner}/${stack.name}`
    if (id === null) return yield* Effect.fail(notFound(`Stack ${full} has no committed frame yet`))
    const frame = yield* store.stacks.getFrame(id).pipe(
      Effect.mapError((e) => (e.reason === "NotFound" ? notFound(`Stack ${full} has no frame ${id}`) : stateError(e)))
    )
    if (frame.owner !== stack.owner || frame.name !== stack.name || frame.status !== "committed") {
      return yield* Effect.fail(notFound(`Stack ${full} has no committed frame ${id}`))
    }
    return frame
  })

const describeParams = (p: Readonly<Record<string, unknown>>) => (Object.keys(p).length === 0 ? "{}" : JSON.stringify(p))

/** The first attachment whose params match; 404 listing the params that exist otherwise. */
export const chooseAttachment = (frame: StackFrameRecord, want: Readonly<Record<string, unknown>>) => {
  const index = frame.attachments.findIndex((a) => paramsMatch(a.params, want))
  if (index >= 0) return Effect.succeed(index)
  return Effect.fail(
    notFound(
      `No attachment of ${frame.owner}/${frame.name} (frame ${frame.id}) has params ${describeParams(want)}; the frame has: ${
        frame.attachments.map((a) => describeParams(a.params)).join(", ")
      }`
    )
  )
}

const intParam = (ctx: RouteContext, name: string): Effect.Effect<number | undefined, ApiError> => {
  const raw = ctx.hono.req.query(name)
  if (raw === undefined || raw === "") return Effect.succeed(undefined)
  const n = Number(raw)
  return Number.isInteger(n) && n >= 0 ? Effect.succeed(n) : Effect.fail(badRequest(`${name} must be a non-negative integer`, ["query", name]))
}

/** Resolves the attachment addressed by a download query (`stack`, `frame_id`, `index`). */
const addressedAttachment = (ctx: RouteContext) =>
  Effect.gen(function*() {
    const stackRef = ctx.hono.req.query("stack")
    if (stackRef === undefined) return yield* Effect.fail(badRequest("stack is required", ["query", "stack"]))
    const path = yield* pathOf(stackRef)
    const principal = yield* optionalPrincipal(ctx)
    const stack = yield* readableStack(path, principal)
    const frame = yield* frameToRead(stack, ctx.hono.req.query("frame_id") || undefined)
    const index = (yield* intParam(ctx, "index")) ?? 0
    if (index >= frame.attachments.length) {
      return yield* Effect.fail(notFound(`Frame ${frame.id} has ${frame.attachments.length} attachment(s); there is no attachment ${index}`))
    }
    return { path, frame, index, attachment: frame.attachments[index] }
  })

const toBody = (stream: Stream.Stream<Uint8Array, unknown>): ReadableStream<Uint8Array> => Stream.toReadableStream(stream)

/** Safe for an HTTP header value: JSON with everything outside printable ASCII escaped. */
const headerJson = (v: unknown) => JSON.stringify(v).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)

// ---------------------------------------------------------------------------------------------
// Table pages for the viewer (decoded on the server by the installed codecs)

const isArrowLike = (t: unknown): t is { numRows: number; schema: { fields: Array<{ name: string }> }; slice: (a: number, b: number) => { toArray: () => Array<{ toJSON: () => Record<string, unknown> }> } } =>
  typeof t === "object" && t !== null && typeof (t as { numRows?: unknown }).numRows === "number" && typeof (t as { slice?: unknown }).slice === "function"

const plain = (v: unknown): unknown =>
  typeof v === "bigint" ? (Number.isSafeInteger(Number(v)) ? Number(v) : v.toString()) : v instanceof Date ? v.toISOString() : v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array) ? String(v) : v

/** One page of a dataframe attachment: column names, rows as arrays, the total row count. */
export const tablePage = (decoded: unknown, offset: number, limit: number) => {
  if (isArrowLike(decoded)) {
    const columns = decoded.schema.fields.map((f) => f.name)
    const rows = decoded.slice(offset, offset + limit).toArray().map((r) => {
      const o = r.toJSON()
      return columns.map((c) => plain(o[c]))
    })
    return Option.some({ columns, rows, total: decoded.numRows, offset })
  }
  if (Array.isArray(decoded) && decoded.every((r) => typeof r === "object" && r !== null && !Array.isArray(r))) {
    const columns = [...new Set(decoded.flatMap((r) => Object.keys(r as object)))]
    const rows = decoded.slice(offset, offset + limit).map((r) => columns.map((c) => plain((r as Record<string, unknown>)[c])))
    return Option.some({ columns, rows, total: decoded.length, offset })
  }
  return Option.none()
}

// ---------------------------------------------------------------------------------------------
// Routes

export const stackRoutes = [
  jsonRoute({
    method: "POST", path: "/api/stacks/frames/create", tag: "stacks", access: "user",
    summary: "Start a push: a new pending frame with its declared attachments (creates the stack on first push)",
    request: CreateFrameRequest, response: CreateFrameResponse,
    handler: (input, ctx) =>
      Effect.gen(function*() {
        const principal = ctx.principal!
        const path = yield* pathOf(input.stack)
        if (!canWrite(path.owner, principal)) {
          return yield* Effect.fail(forbidden(`You (${principal.username}) cannot push to ${formatStackPath(path)}: it belongs to ${path.owner}`))
        }
        const why = invalidStackName(path.name)
        if (why !== undefined) return yield* Effect.fail(badRequest(why, ["body", "stack"]))
        const store = yield* StateStore
        const access = input.access ?? (yield* store.stacks.defaultAccess(path.owner).pipe(Effect.mapError(stateError)))
        const stack = yield* store.stacks.ensure(path.owner, path.name, access).pipe(Effect.mapError(stateError))
        // An explicit access on a later push changes the stack's access (upstream behaviour).
        if (input.access !== undefined && stack.access !== input.access) {
          yield* store.stacks.setAccess(path.owner, path.name, input.access).pipe(Effect.mapError(stateError))
        }
        const frame = yield* store.stacks.insertFrame({
          id: randomUUID(),
          owner: path.owner,
          name: path.name,
          message: input.message ?? null,
          params: input.params ?? {},
          attachments: input.attachments.map((a) => ({
            description: a.description ?? null,
            params: a.params ?? {},
            contentType: a.contentType,
            application: a.application,
            metadata: a.metadata ?? {},
            size: null,
            blobKey: null,
            digest: null
          })),
          status: "pending",
          createdBy: principal.username,
          createdAt: new Date(),
          committedAt: null
        }).pipe(Effect.mapError(stateError))
        yield* maybeSweepPendingFrames.pipe(Effect.catchAllCause(() => Effect.void))
        return { frame_id: frame.id, stack: formatStackPath(path), attachments: frame.attachments.length }
      })
  }),
  rawRoute({
    method: "PUT", path: "/api/stacks/frames/:frame_id/attachments/:index", tag: "stacks", access: "user",
    summary: "Upload the bytes of one attachment of a pending frame (streamed raw body)",
    requestDescription: "The encoded object as the raw request body, up to the server's upload limit (default 64 GiB); streamed into the blob store.",
    responseDescription: "{ frame_id, index, size, digest } (digest: SHA-256, hex). 413 past the upload limit, naming it.",
    handler: (ctx) =>
      Effect.gen(function*() {
        const store = yield* StateStore
        const blobs = yield* BlobStore
        const frameId = ctx.params.frame_id
        const index = Number(ctx.params.index)
        const frame = yield* store.stacks.getFrame(frameId).pipe(
          Effect.mapError((e) => (e.reason === "NotFound" ? notFound(`Frame ${frameId} does not exist`) : stateError(e)))
        )
        const path = { owner: frame.owner, name: frame.name }
        if (!canWrite(frame.owner, ctx.principal!)) {
          return yield* Effect.fail(forbidden(`You (${ctx.principal!.username}) cannot push to ${formatStackPath(path)}`))
        }
        if (frame.status !== "pending") return yield* Effect.fail(badRequest(`Frame ${frameId} is already committed`))
        if (!Number.isInteger(index) || index < 0 || index >= frame.attachments.length) {
          return yield* Effect.fail(notFound(`Frame ${frameId} has ${frame.attachments.length} attachment(s); there is no attachment ${ctx.params.index}`))
        }
        const a = frame.attachments[index]
        const limit = yield* StackUploadLimit
        const declared = Number(ctx.hono.req.header("content-length") ?? Number.NaN)
        if (Number.isFinite(declared) && declared > limit) {
          return yield* Effect.fail(payloadTooLarge(`The attachment (${declared} bytes) exceeds the upload limit of ${formatBytes(limit)}`))
        }
        const blobKey = `${framePrefix(path, frameId)}${index}`
        // The body goes to the blob store as plain pieces (no Effect per piece, no web-stream
        // adapter on Node); the store hashes and writes it in chunks as it arrives.
        const put = yield* blobs.put(blobKey, uploadBody(ctx, limit), { contentType: a.contentType }).pipe(
          Effect.catchTag("BlobStoreError", (e) =>
            Effect.fail(
              e.cause instanceof UploadTooLarge
                ? payloadTooLarge(`The attachment exceeds the upload limit of ${formatBytes(e.cause.limit)}`)
                : e.cause instanceof BodyReadFailed
                ? badRequest(e.cause.message)
                : blobError(e)
            ))
        )
        yield* store.stacks.setAttachmentBlob(frameId, index, { size: put.size, blobKey, digest: put.digest }).pipe(
          Effect.mapError(stateError),
          // The frame was committed or swept away while the bytes arrived: they belong to nothing.
          Effect.tapError(() => Effect.ignore(blobs.delete(blobKey)))
        )
        return ctx.hono.json({ frame_id: frameId, index, size: put.size, digest: put.digest }, 200)
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/stacks/frames/commit", tag: "stacks", access: "user",
    summary: "Finish a push: the frame becomes the stack's head once every attachment is stored",
    request: CommitFrameRequest, response: CommitFrameResponse,
    handler: (input, ctx) =>
      Effect.gen(function*() {
        const store = yield* StateStore
        const frame = yield* store.stacks.getFrame(input.frameId).pipe(
          Effect.mapError((e) => (e.reason === "NotFound" ? notFound(`Frame ${input.frameId} does not exist`) : stateError(e)))
        )
        const path = { owner: frame.owner, name: frame.name }
        if (!canWrite(frame.owner, ctx.principal!)) {
          return yield* Effect.fail(forbidden(`You (${ctx.principal!.username}) cannot push to ${formatStackPath(path)}`))
        }
        const committed = yield* store.stacks.commitFrame(input.frameId, input.message ?? null).pipe(Effect.mapError(stateError))
        const origin = new URL(ctx.hono.req.url).origin
        return { frame_id: committed.id, stack: formatStackPath(path), url: `${origin}${viewerPath(path)}` }
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/stacks/get", tag: "stacks", access: "public",
    summary: "A stack: its head frame and its history (newest first); public stacks need no token",
    request: GetStackRequest, response: StackInfo,
    handler: (input, ctx) =>
      Effect.gen(function*() {
        const path = yield* pathOf(input.stack)
        const stack = yield* readableStack(path, yield* optionalPrincipal(ctx))
        const store = yield* StateStore
        const frames = yield* store.stacks.listFrames(path.owner, path.name, input.framesLimit ?? 100).pipe(Effect.mapError(stateError))
        const head = stack.head === null ? null : (frames.find((f) => f.id === stack.head) ?? (yield* frameToRead(stack, undefined)))
        return { ...summary(stack), head_frame: head === null ? null : frameInfo(head), frames: frames.map(frameInfo) }
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/stacks/list", tag: "stacks", access: "public",
    summary: "Your stacks and the public ones (every stack for admins; only public ones without a token)",
    response: Schema.Struct({ stacks: Schema.Array(StackSummary) }),
    handler: (_: void, ctx) =>
      Effect.gen(function*() {
        const principal = yield* optionalPrincipal(ctx)
        const store = yield* StateStore
        const stacks = yield* (principal?.globalRole === "admin"
          ? store.stacks.list(undefined, true)
          : store.stacks.list(principal?.username ?? "", true)).pipe(Effect.mapError(stateError))
        return { stacks: stacks.map(summary) }
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/stacks/pull", tag: "stacks", access: "public",
    summary: "Which attachment a pull gets: of the head (or frame_id), the first whose params match",
    request: PullRequest, response: PullResponse,
    handler: (input, ctx) =>
      Effect.gen(function*() {
        const path = yield* pathOf(input.stack)
        const stack = yield* readableStack(path, yield* optionalPrincipal(ctx))
        const frame = yield* frameToRead(stack, input.frameId)
        const index = yield* chooseAttachment(frame, input.params ?? {})
        const q = new URLSearchParams({ stack: formatStackPath(path), frame_id: frame.id, index: String(index) })
        return {
          stack: formatStackPath(path),
          frame_id: frame.id,
          attachment: attachmentInfo(frame.attachments[index], index),
          download_path: `/api/stacks/attachment?${q}`
        }
      })
  }),
  rawRoute({
    method: "GET", path: "/api/stacks/attachment", tag: "stacks", access: "public",
    summary: "Download the bytes of an attachment (streamed)",
    requestDescription: "Query: stack (owner/name), frame_id (default: the head), index (default 0). Token: Authorization header or the viewer cookie.",
    responseDescription: "The raw bytes with Content-Type; X-Dstack-Application and X-Dstack-Metadata (JSON) describe them.",
    handler: (ctx) =>
      Effect.gen(function*() {
        const { attachment } = yield* addressedAttachment(ctx)
        const blobs = yield* BlobStore
        const blob = yield* blobs.get(attachment.blobKey!).pipe(Effect.mapError(blobError))
        return new Response(toBody(blob.body), {
          status: 200,
          headers: {
            "content-type": attachment.contentType,
            "content-length": String(blob.stat.size),
            "x-dstack-application": attachment.application,
            "x-dstack-metadata": headerJson(attachment.metadata),
            "cache-control": "private, no-store"
          }
        })
      })
  }),
  rawRoute({
    method: "GET", path: "/api/stacks/table", tag: "stacks", access: "public",
    summary: "A page of a dataframe attachment as JSON rows (for the viewer)",
    requestDescription: "Query: stack, frame_id, index as for /api/stacks/attachment; offset (default 0), limit (default 50, at most 1000).",
    responseDescription: "{ columns, rows, total, offset }",
    handler: (ctx) =>
      Effect.gen(function*() {
        const { attachment } = yield* addressedAttachment(ctx)
        const offset = (yield* intParam(ctx, "offset")) ?? 0
        const limit = Math.min((yield* intParam(ctx, "limit")) ?? 50, 1000)
        const blobs = yield* BlobStore
        const host = yield* PluginHost
        const blob = yield* blobs.get(attachment.blobKey!).pipe(Effect.mapError(blobError))
        const decoded = yield* AutoHandler.make(host.codecs()).decode({
          contentType: attachment.contentType,
          application: attachment.application,
          metadata: attachment.metadata as Codec.Metadata,
          body: blob.body.pipe(
            Stream.mapError((e) => new Codec.CodecError({ module: "stacks", method: "table", reason: "Unknown", message: e.message ?? e.reason }))
          )
        }).pipe(Effect.mapError((e) => badRequest(e.message ?? e.reason)))
        const page = tablePage(decoded, offset, limit)
        if (Option.isNone(page)) return yield* Effect.fail(badRequest(`The attachment (${attachment.contentType}) does not decode to a table`))
        return ctx.hono.json(page.value, 200)
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/stacks/update", tag: "stacks", access: "user",
    summary: "Change a stack's access (owner or admin)",
    request: UpdateStackRequest, response: StackSummary,
    handler: (input, ctx) =>
      Effect.gen(function*() {
        const path = yield* pathOf(input.stack)
        yield* ownedStack(path, ctx.principal!)
        const store = yield* StateStore
        return summary(yield* store.stacks.setAccess(path.owner, path.name, input.access).pipe(Effect.mapError(stateError)))
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/stacks/delete", tag: "stacks", access: "user",
    summary: "Delete a stack with all its frames and attachments (owner or admin)",
    request: StackOnlyRequest, response: Schema.Struct({}),
    handler: (input, ctx) =>
      Effect.gen(function*() {
        const path = yield* pathOf(input.stack)
        yield* ownedStack(path, ctx.principal!)
        const store = yield* StateStore
        const blobs = yield* BlobStore
        yield* store.stacks.delete(path.owner, path.name).pipe(Effect.mapError(stateError))
        yield* Stream.runForEach(blobs.list(stackPrefix(path)), (k) => blobs.delete(k)).pipe(Effect.mapError(blobError))
        return {}
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/stacks/set_default_access", tag: "stacks", access: "user",
    summary: "Your default access for new stacks (upstream: the user's settings); private until set",
    request: DefaultAccessRequest, response: Schema.Struct({ access: Access_ }),
    handler: (input, ctx) =>
      Effect.flatMap(StateStore, (s) => s.stacks.setDefaultAccess(ctx.principal!.username, input.access)).pipe(
        Effect.mapError(stateError),
        Effect.as({ access: input.access })
      )
  }),
  jsonRoute({
    method: "POST", path: "/api/stacks/get_default_access", tag: "stacks", access: "user",
    summary: "Your default access for new stacks",
    response: Schema.Struct({ access: Access_ }),
    handler: (_: void, ctx) =>
      Effect.flatMap(StateStore, (s) => s.stacks.defaultAccess(ctx.principal!.username)).pipe(
        Effect.mapError(stateError),
        Effect.map((access) => ({ access }))
      )
  })
]

// The key prefix of a stack in the blob store, exported for tests.
export { stackPrefix }

// Used by `requirePrincipal` callers outside this module (the viewer).
export { requirePrincipal }
