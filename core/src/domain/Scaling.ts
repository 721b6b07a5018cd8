/**
 * What a service says about its traffic: autoscaling rules (`scaling:` — replicas follow
 * requests per second, with a delay before scaling up, 300 s, and down, 600 s), rate limits
 * (`rate_limits:`) and readiness probes (`probes:`), with the upstream keys and defaults.
 */
import { Schema } from "effect"
import { Duration } from "./Duration.ts"
import { oneOf } from "./Grammar.ts"

export const DEFAULT_SCALE_UP_DELAY_SECONDS = 300
export const DEFAULT_SCALE_DOWN_DELAY_SECONDS = 600
/** The window requests per second are averaged over (upstream allows 30, 60 and 300 s). */
export const DEFAULT_SCALING_WINDOW_SECONDS = 60
export const SCALING_WINDOWS_SECONDS: ReadonlyArray<number> = [30, 60, 300]

export const Scaling = Schema.Struct({
  metric: oneOf("rps").annotations({
    description: "The metric to follow. Only `rps` (requests per second) is supported."
  }),
  target: Schema.Number.pipe(Schema.positive()).annotations({
    description: "The metric value one replica should handle; replicas = ceil(metric / target), within `replicas`."
  }),
  window: Schema.optionalWith(
    Duration.pipe(Schema.filter((s) => SCALING_WINDOWS_SECONDS.includes(s) || `the window must be one of 30s, 1m, 5m, got ${s}s`)),
    { default: () => DEFAULT_SCALING_WINDOW_SECONDS }
  ).annotations({ description: "The time window requests per second are averaged over: `30s`, `1m` or `5m`. Defaults to `1m`." }),
  scaleUpDelay: Schema.optionalWith(Duration, { default: () => DEFAULT_SCALE_UP_DELAY_SECONDS })
    .annotations({ description: "Wait this long after the last scaling before scaling up (seconds or `5m`); from zero replicas there is no wait. Defaults to 300." })
    .pipe(Schema.fromKey("scale_up_delay")),
  scaleDownDelay: Schema.optionalWith(Duration, { default: () => DEFAULT_SCALE_DOWN_DELAY_SECONDS })
    .annotations({ description: "Wait this long after the last scaling before scaling down. Defaults to 600." })
    .pipe(Schema.fromKey("scale_down_delay"))
}).annotations({ identifier: "Scaling", description: "Autoscaling rules: `{metric: rps, target, window, scale_up_delay, scale_down_delay}`." })
export type Scaling = typeof Scaling.Type

/** A rate limit of a service: requests per second per client IP under a path prefix. */
export const RateLimit = Schema.Struct({
  prefix: Schema.optionalWith(Schema.String.pipe(Schema.pattern(/^\/\S*$/, { message: () => "a prefix starts with / and has no spaces" })), { default: () => "/" })
    .annotations({ description: "The path prefix (after the service's own) the limit applies to; the longest matching prefix applies. Defaults to `/`." }),
  key: Schema.optionalWith(Schema.Struct({ type: oneOf("ip_address") }), { default: () => ({ type: "ip_address" as const }) })
    .annotations({ description: "What requests are counted by: `{type: ip_address}` (the default and the only one here)." }),
  rps: Schema.Number.pipe(Schema.greaterThanOrEqualTo(1 / 60)).annotations({ description: "The most requests per second a client may make." }),
  burst: Schema.optionalWith(Schema.Int.pipe(Schema.nonNegative()), { default: () => 0 })
    .annotations({ description: "How many requests a client may make ahead of the rate. Defaults to 0." })
}).annotations({ identifier: "RateLimit" })
export type RateLimit = typeof RateLimit.Type

export const DEFAULT_PROBE_TIMEOUT_SECONDS = 10
export const DEFAULT_PROBE_INTERVAL_SECONDS = 15
export const DEFAULT_PROBE_READY_AFTER = 1

/** An HTTP readiness probe: a replica serves requests once `ready_after` probes in a row succeeded. */
export const Probe = Schema.Struct({
  type: oneOf("http"),
  url: Schema.optionalWith(Schema.String.pipe(Schema.startsWith("/")), { default: () => "/" })
    .annotations({ description: "The path to request. Defaults to `/`." }),
  method: Schema.optionalWith(oneOf("get", "post", "put", "delete", "patch", "head"), { default: () => "get" as const })
    .annotations({ description: "The HTTP method. Defaults to `get`." }),
  headers: Schema.optionalWith(Schema.Array(Schema.Struct({ name: Schema.NonEmptyString, value: Schema.String })), { default: () => [] }),
  body: Schema.optional(Schema.String),
  timeout: Schema.optionalWith(Duration, { default: () => DEFAULT_PROBE_TIMEOUT_SECONDS })
    .annotations({ description: "How long one probe may take. Defaults to 10 s." }),
  interval: Schema.optionalWith(Duration, { default: () => DEFAULT_PROBE_INTERVAL_SECONDS })
    .annotations({ description: "Time between probes. Defaults to 15 s." }),
  readyAfter: Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { default: () => DEFAULT_PROBE_READY_AFTER })
    .annotations({ description: "Successful probes in a row before the replica is ready. Defaults to 1." })
    .pipe(Schema.fromKey("ready_after")),
  untilReady: Schema.optional(Schema.Boolean)
    .annotations({ description: "Stop probing once the replica is ready. Defaults to `false`: the probe goes on, and a replica whose probe fails leaves the rotation until it passes `ready_after` times in a row again." })
    .pipe(Schema.fromKey("until_ready"))
}).annotations({ identifier: "Probe" })
export type Probe = typeof Probe.Type
