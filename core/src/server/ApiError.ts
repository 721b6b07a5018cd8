// The one error type an HTTP route can fail with. It carries the status code and renders as
// the upstream error body: {"detail": [{"msg": ..., "code": ..., "loc"?: [...]}]}.
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
export type ApiErrorDetail = typeof ApiErrorDetail.Type

/** The JSON body of every error response. */
export const ApiErrorBody = Schema.Struct({ detail: Schema.Array(ApiErrorDetail) })

export class ApiError extends Schema.TaggedError<ApiError>("@dstack-ts/core/ApiError")("ApiError", {
  status: Schema.Literal(400, 401, 403, 404, 409, 413, 500, 503),
  detail: Schema.Array(ApiErrorDetail),
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    return this.detail.map((d) => (d.loc && d.loc.length > 0 ? `${d.loc.join(".")}: ${d.msg}` : d.msg)).join("; ")
  }
}

const one = (status: ApiError["status"], code: ApiErrorCode, msg: string, loc?: ReadonlyArray<string | number>) =>
  new ApiError({ status, detail: [loc ? { msg, code, loc } : { msg, code }] })

export const badRequest = (msg: string, loc?: ReadonlyArray<string | number>) => one(400, "invalid_request", msg, loc)
export const unauthenticated = (msg = "Not authenticated: send an `Authorization: Bearer <token>` header") =>
  one(401, "not_authenticated", msg)
export const forbidden = (msg = "Access denied") => one(403, "forbidden", msg)
export const notFound = (msg: string) => one(404, "resource_not_exists", msg)
// Upstream answers 400 with code resource_exists, not 409.
export const alreadyExists = (msg: string) => one(400, "resource_exists", msg)
export const conflict = (msg: string) => one(409, "conflict", msg)
export const payloadTooLarge = (msg: string) => one(413, "payload_too_large", msg)
export const serverError = (msg: string, cause?: unknown) =>
  new ApiError({ status: 500, detail: [{ msg, code: "server_error" }], cause })

/** The one place a StateStore failure becomes an HTTP answer. */
export const fromStateStore = (error: {
  readonly reason: string
  readonly message?: string | undefined
}): ApiError => {
  const msg = error.message ?? error.reason
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
      return new ApiError({ status: 503, detail: [{ msg: `The state store is unavailable: ${msg}`, code: "server_error" }], cause: error })
    default:
      return serverError(msg, error)
  }
}
