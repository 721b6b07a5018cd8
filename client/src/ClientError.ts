/**
 * The errors of the client SDK. `ClientError` is what a call to the server fails with: an
 * error response (status, code, msg, loc from the upstream `{"detail": [...]}` body), an
 * unreachable server, or a response the client cannot decode. `ClientConfigError` is what
 * resolving the client configuration (`~/.dstack/config.yml`, env, options) fails with.
 */
import { Schema } from "effect"

/** Why a call failed. A closed set; the CLI maps each one to one line of output. */
export const ClientErrorReason = Schema.Literal(
  "Unreachable",
  "Unauthenticated",
  "Forbidden",
  "NotFound",
  "Invalid",
  "Conflict",
  "PayloadTooLarge",
  "ServerError",
  "BadResponse",
  "NotAvailable"
)
export type ClientErrorReason = typeof ClientErrorReason.Type

const Loc = Schema.Array(Schema.Union(Schema.String, Schema.Number))

/** One entry of an error body, as the server sent it. */
export const ClientErrorDetail = Schema.Struct({
  msg: Schema.String,
  code: Schema.String,
  loc: Schema.optional(Loc)
})
export type ClientErrorDetail = typeof ClientErrorDetail.Type

/**
 * An entry of an error body as the server sends it: upstream's 400s name the field path in
 * `fields: [[...]]` (its client passes the entry's keys to an exception), other statuses in
 * `loc`. Read as a `ClientErrorDetail` with the path in `loc` either way.
 */
export const WireErrorDetail = Schema.transform(
  Schema.Struct({
    msg: Schema.String,
    code: Schema.NullishOr(Schema.String),
    loc: Schema.optional(Loc),
    fields: Schema.optional(Schema.NullOr(Schema.Array(Loc)))
  }),
  Schema.typeSchema(ClientErrorDetail),
  {
    strict: true,
    decode: ({ msg, code, loc, fields }) => {
      const path = loc ?? fields?.[0]
      return { msg, code: code ?? "error", ...(path !== undefined ? { loc: path } : {}) }
    },
    encode: (d) => ({ msg: d.msg, code: d.code, ...(d.loc !== undefined ? { loc: d.loc } : {}) })
  }
)

/**
 * A failed call to the dstack server.
 * - `status`: the HTTP status (absent when no response came back).
 * - `code`, `msg`, `loc`: the first detail of the error body; `details` holds all of them.
 * - `url`: the server URL, `method`: the API method (`runs.get`, `users.getMyUser`).
 */
export class ClientError extends Schema.TaggedError<ClientError>("@dstack-ts/core/client/ClientError")("ClientError", {
  module: Schema.String,
  method: Schema.String,
  reason: ClientErrorReason,
  url: Schema.String,
  msg: Schema.String,
  status: Schema.optional(Schema.Number),
  code: Schema.optional(Schema.String),
  loc: Schema.optional(Loc),
  details: Schema.optional(Schema.Array(ClientErrorDetail)),
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    const details = this.details && this.details.length > 0 ? this.details : [{ msg: this.msg, loc: this.loc }]
    return details.map((d) => (d.loc && d.loc.length > 0 ? `${d.loc.join(".")}: ${d.msg}` : d.msg)).join("; ")
  }

  /** Only a server that could not be reached may answer on a second try. */
  get isRetryable(): boolean {
    return this.reason === "Unreachable"
  }
}

/**
 * The reason that goes with an HTTP status and the error's code: upstream answers a missing
 * resource with 400 `resource_not_exists` and a bad token with 403 `not_authenticated`.
 */
export const reasonOfStatus = (status: number, code?: string): ClientErrorReason => {
  if (code === "resource_not_exists" && status === 400) return "NotFound"
  if (code === "not_authenticated" && status === 403) return "Unauthenticated"
  switch (status) {
    case 400:
    case 422:
      return "Invalid"
    case 401:
      return "Unauthenticated"
    case 403:
      return "Forbidden"
    case 404:
      return "NotFound"
    case 409:
      return "Conflict"
    case 413:
      return "PayloadTooLarge"
    default:
      return status >= 500 ? "ServerError" : "BadResponse"
  }
}

/** Why the client configuration could not be resolved. */
export const ClientConfigErrorReason = Schema.Literal("NoConfig", "NoProject", "Invalid", "Io")
export type ClientConfigErrorReason = typeof ClientConfigErrorReason.Type

/**
 * The client configuration is missing, names no such project, or is malformed. The message is
 * meant to be shown as is: it says what to run (`dstack project add …`) to fix it.
 */
export class ClientConfigError extends Schema.TaggedError<ClientConfigError>("@dstack-ts/core/client/ClientConfigError")(
  "ClientConfigError",
  {
    reason: ClientConfigErrorReason,
    message: Schema.String,
    path: Schema.optional(Schema.String),
    cause: Schema.optional(Schema.Defect)
  }
) {}
