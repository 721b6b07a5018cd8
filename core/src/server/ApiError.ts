// The one error type an HTTP route can fail with. It carries the status code and renders as
// upstream's error body (`wireBody`), so that upstream's client raises the error it expects:
// a 400 is {"detail": [{"msg", "code", "fields"?}]} with upstream's codes (`error` for a bad
// request, `resource_not_exists`, `resource_exists`) and each field path in `fields`; a
// validation failure is a 422 and any other status {"detail": [{"msg", "code", "loc"?}]}.
import { Schema } from "effect"

export const ApiErrorCode = Schema.Literal(
  "invalid_request",
  "not_authenticated",
  "forbidden",
  "resource_not_exists",
  "resource_exists",
  "conflict",
  "payload_too_large",
  "server_error",
  "no_offers"
)
export type ApiErrorCode = typeof ApiErrorCode.Type

export const ApiErrorDetail = Schema.Struct({
  msg: Schema.String,
  code: ApiErrorCode,
  loc: Schema.optional(Schema.Array(Schema.Union(Schema.String, Schema.Number)))
})

/** A detail as sent: at 400 the code is upstream's (`error` for `invalid_request`) and the path is in `fields`. */
export const ApiErrorWireDetail = Schema.Struct({
  msg: Schema.String,
  code: Schema.Union(ApiErrorCode, Schema.Literal("error")),
  loc: Schema.optional(Schema.Array(Schema.Union(Schema.String, Schema.Number))),
  fields: Schema.optional(Schema.Array(Schema.Array(Schema.String)))
})
export type ApiErrorDetail = typeof ApiErrorDetail.Type

/** The JSON body of every error response. */
export const ApiErrorBody = Schema.Struct({ detail: Schema.Array(ApiErrorWireDetail) })

export class ApiError extends Schema.TaggedError<ApiError>("@dstack-ts/core/ApiError")("ApiError", {
  status: Schema.Literal(400, 401, 403, 404, 409, 413, 422, 500, 503),
  detail: Schema.Array(ApiErrorDetail),
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    return this.detail.map((d) => (d.loc && d.loc.length > 0 ? `${d.loc.join(".")}: ${d.msg}` : d.msg)).join("; ")
  }
}

/** The most characters of a client's input (a name, a path) an error message repeats. */
export const MAX_EXCERPT = 64
/** The most characters of one error message sent: the bound for messages that quote input whole (a schema's). */
export const MAX_MESSAGE = 1_000

/**
 * `text` as an error message repeats input: whole when short, else its first `max` characters
 * and its length — a 404 for a 100 MB run name must not send the name back.
 */
export const excerpt = (text: string, max: number = MAX_EXCERPT): string => {
  if (text.length <= max) return text
  // Not half of a surrogate pair.
  const end = /[\uD800-\uDBFF]/.test(text[max - 1]!) ? max - 1 : max
  return `${text.slice(0, end)}… (${text.length.toLocaleString("en-US")} characters)`
}

const isLong = (d: ApiErrorDetail): boolean =>
  d.msg.length > MAX_MESSAGE || (d.loc !== undefined && d.loc.some((p) => typeof p === "string" && p.length > MAX_EXCERPT))

/**
 * `error` as it is sent: each message cut to `MAX_MESSAGE` characters and each field name of a
 * location to `MAX_EXCERPT`; `error` itself when nothing is longer.
 */
export const clipped = (error: ApiError): ApiError =>
  !error.detail.some(isLong)
    ? error
    : new ApiError({
        status: error.status,
        detail: error.detail.map((d) => ({
          ...d,
          msg: excerpt(d.msg, MAX_MESSAGE),
          ...(d.loc !== undefined ? { loc: d.loc.map((p) => (typeof p === "string" ? excerpt(p) : p)) } : {})
        })),
        cause: error.cause
      })

const one = (status: ApiError["status"], code: ApiErrorCode, msg: string, loc?: ReadonlyArray<string | number>) =>
  new ApiError({ status, detail: [loc ? { msg, code, loc } : { msg, code }] })

export const badRequest = (msg: string, loc?: ReadonlyArray<string | number>) => one(400, "invalid_request", msg, loc)
// Upstream answers a missing or bad token with 403 (its client says to check the token); the
// code tells it from a role too low.
export const unauthenticated = (msg = "Not authenticated: send an `Authorization: Bearer <token>` header") =>
  one(403, "not_authenticated", msg)
export const forbidden = (msg = "Access denied") => one(403, "forbidden", msg)
// Upstream answers a missing resource with 400 and code resource_not_exists (its client raises
// ResourceNotExistsError); a 404 means no such route.
export const notFound = (msg: string) => one(400, "resource_not_exists", msg)
/** No route at this path: a 404, as upstream's client expects for an unknown URL. */
export const noRoute = (msg: string) => one(404, "resource_not_exists", msg)
/**
 * The statuses of routes upstream does not have (stacks and their viewer pages, which browsers
 * open): 404 for what is missing, 401 for a token to send.
 */
export const notFoundPage = noRoute
export const unauthenticatedPage = (msg = "Not authenticated: send an `Authorization: Bearer <token>` header") =>
  one(401, "not_authenticated", msg)
// Upstream answers 400 with code resource_exists, not 409.
export const alreadyExists = (msg: string) => one(400, "resource_exists", msg)
export const conflict = (msg: string) => one(409, "conflict", msg)
export const payloadTooLarge = (msg: string) => one(413, "payload_too_large", msg)
/** True for a failure for lack of disk space (ENOSPC), by its message or its cause's code. */
const isOutOfSpace = (msg: string, cause?: unknown): boolean => {
  if (/\bENOSPC\b|no space left on device/i.test(msg)) return true
  for (let c = cause, depth = 0; typeof c === "object" && c !== null && depth < 4; c = (c as { cause?: unknown }).cause, depth++) {
    if ((c as { code?: unknown }).code === "ENOSPC") return true
  }
  return false
}

/**
 * The server's disk is full: a 503 that says so (the server is fine otherwise, and the same
 * request passes once space is freed), never a 500 that reads like a bug.
 */
export const diskFull = (msg: string, cause?: unknown) =>
  new ApiError({
    status: 503,
    detail: [{ msg: `The server's disk is full (no space left on device): free space on it and try again. ${msg}`, code: "server_error" }],
    cause
  })

/** A 500; a failure for lack of disk space is answered as `diskFull` instead. */
export const serverError = (msg: string, cause?: unknown) =>
  isOutOfSpace(msg, cause) ? diskFull(msg, cause) : new ApiError({ status: 500, detail: [{ msg, code: "server_error" }], cause })

/** The one place a StateStore failure becomes an HTTP answer. */
export const fromStateStore = (error: {
  readonly reason: string
  readonly message?: string | undefined
}): ApiError => {
  const msg = error.message ?? error.reason
  if (isOutOfSpace(msg, error)) return diskFull(msg, error)
  switch (error.reason) {
    case "NotFound":
      return notFound(msg)
    case "AlreadyExists":
      return alreadyExists(msg)
    case "Invalid":
      return badRequest(msg)
    case "Conflict":
    case "LeaseLost":
      return conflict(msg)
    case "Unavailable":
      // Names the database, so an operator looks there and a client knows to try again.
      return new ApiError({
        status: 503,
        detail: [{ msg: `The server's database (state store) is unavailable, try again shortly: ${msg}`, code: "server_error" }],
        cause: error
      })
    default:
      return serverError(msg, error)
  }
}

/** Upstream's code for a detail of a 400: its client knows `error`, not `invalid_request`. */
const upstreamCode = (code: ApiErrorCode): string => (code === "invalid_request" ? "error" : code)

/**
 * The JSON body of `error` as sent (after `clipped`). At 400 upstream's client turns a single
 * detail into an exception by passing its keys (`msg`, `fields`) to the constructor, so a 400
 * carries the field path as `fields: [[...]]` and no `loc`.
 */
export const wireBody = (error: ApiError): { readonly detail: ReadonlyArray<Record<string, unknown>> } => ({
  detail:
    error.status === 400
      ? error.detail.map((d) => ({
          msg: d.msg,
          code: upstreamCode(d.code),
          ...(d.loc !== undefined && d.loc.length > 0 ? { fields: [d.loc.map(String)] } : {})
        }))
      : error.detail
})
