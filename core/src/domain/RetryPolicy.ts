/**
 * When a failed or unplaced run is resubmitted. The current form is
 * `retry: true | false | {on_events, duration}`; the older `retry_policy: {retry, limit}`
 * (seed-002) is read into the same shape.
 */
import { Either, ParseResult, Schema } from "effect"
import { nullAsAbsent } from "./internal/nullAsAbsent.ts"
import { Duration } from "./Duration.ts"
import { isPlainObject, oneOf, show } from "./Grammar.ts"

/** What happened to a job: no offer had capacity, a spot instance was taken back, or it failed. */
export const RetryEvent = oneOf("no-capacity", "interruption", "error").annotations({
  identifier: "RetryEvent",
  description: "`no-capacity`, `interruption` or `error`."
})
export type RetryEvent = typeof RetryEvent.Type
export const ALL_RETRY_EVENTS: ReadonlyArray<RetryEvent> = ["no-capacity", "interruption", "error"]

/** One hour, the default retry duration. */
export const DEFAULT_RETRY_DURATION_SECONDS = 3600

/** The object form of `retry`. */
export const RetryPolicyObject = Schema.Struct({
  onEvents: Schema.optionalWith(Schema.Array(RetryEvent), { default: () => ALL_RETRY_EVENTS })
    .annotations({ description: "The events to retry on: `no-capacity`, `interruption`, `error`. Defaults to all three." })
    .pipe(Schema.fromKey("on_events")),
  duration: Schema.optionalWith(Duration, { default: () => DEFAULT_RETRY_DURATION_SECONDS }).annotations({
    description: "How long to keep retrying (`1h`, `1d`). Defaults to `1h`."
  })
})

/**
 * The retry policy: which events lead to a resubmission, for how long (seconds). No retry is
 * `onEvents: []`. YAML: `retry: true` (all events, 1h), `retry: false`, or `{on_events, duration}`.
 */
export const RetryPolicy: Schema.Schema<RetryPolicy, typeof RetryPolicyObject.Encoded | boolean> = Schema.transformOrFail(
  Schema.Unknown,
  Schema.typeSchema(RetryPolicyObject),
  {
    strict: true,
    decode: (u, options, ast) => {
      if (u === true) return ParseResult.succeed(RETRY_ALL)
      if (u === false) return ParseResult.succeed(NO_RETRY)
      if (isPlainObject(u)) return ParseResult.decodeUnknown(nullAsAbsent(RetryPolicyObject))(u, options)
      return ParseResult.fail(
        new ParseResult.Type(ast, u, `expected true, false or {on_events, duration}, got ${show(u)}`)
      )
    },
    encode: (a, options) => ParseResult.encode(RetryPolicyObject)(a, options)
  }
).annotations({
  identifier: "RetryPolicy",
  description: "Resubmit the run on failure: `true` (on any event, for 1h), `false`, or `{on_events, duration}`."
}) as never
export interface RetryPolicy {
  readonly onEvents: ReadonlyArray<RetryEvent>
  readonly duration: number
}

export const RETRY_ALL: RetryPolicy = { onEvents: ALL_RETRY_EVENTS, duration: DEFAULT_RETRY_DURATION_SECONDS }
export const NO_RETRY: RetryPolicy = { onEvents: [], duration: DEFAULT_RETRY_DURATION_SECONDS }

/** Whether a policy retries at all. */
export const isRetryEnabled = (policy: RetryPolicy | undefined): boolean => (policy?.onEvents.length ?? 0) > 0

/** The older form, `retry_policy: {retry, limit}` (`duration` is taken as a newer name of `limit`). */
export const LegacyRetryPolicy = Schema.Struct({
  retry: Schema.optionalWith(Schema.Boolean, { default: () => false }).annotations({
    description: "Whether to retry. Defaults to `false`."
  }),
  limit: Schema.optionalWith(Duration, { exact: true }).annotations({ description: "How long to keep retrying (`3d`, `12h`)." }),
  duration: Schema.optionalWith(Duration, { exact: true }).annotations({ description: "Same as `limit`." })
}).annotations({ identifier: "LegacyRetryPolicy", description: "Deprecated: use `retry`." })
export type LegacyRetryPolicy = typeof LegacyRetryPolicy.Type

/** Maps the older `retry_policy` onto a `RetryPolicy`: a retry on every event, for `limit`. */
export const fromLegacyRetryPolicy = (legacy: LegacyRetryPolicy): RetryPolicy =>
  legacy.retry
    ? { onEvents: ALL_RETRY_EVENTS, duration: legacy.limit ?? legacy.duration ?? DEFAULT_RETRY_DURATION_SECONDS }
    : NO_RETRY

/** Parses either form for callers outside a configuration file. */
export const decodeRetry = (u: unknown): Either.Either<RetryPolicy, ParseResult.ParseError> =>
  Schema.decodeUnknownEither(RetryPolicy)(u)
