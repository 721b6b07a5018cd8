/**
 * Autoscaling rules of a service (`scaling:`): replicas follow requests per second, with a
 * delay before scaling up (300 s) and down (600 s).
 */
import { Schema } from "effect"
import { Duration } from "./Duration.ts"
import { oneOf } from "./Grammar.ts"

export const DEFAULT_SCALE_UP_DELAY_SECONDS = 300
export const DEFAULT_SCALE_DOWN_DELAY_SECONDS = 600

export const Scaling = Schema.Struct({
  metric: oneOf("rps").annotations({
    description: "The metric to follow. Only `rps` (requests per second) is supported."
  }),
  target: Schema.Number.pipe(Schema.positive()).annotations({
    description: "The metric value one replica should handle; replicas = ceil(metric / target), within `replicas`."
  }),
  scaleUpDelay: Schema.optionalWith(Duration, { default: () => DEFAULT_SCALE_UP_DELAY_SECONDS })
    .annotations({ description: "Wait this long after the last scaling before scaling up (seconds or `5m`). Defaults to 300." })
    .pipe(Schema.fromKey("scale_up_delay")),
  scaleDownDelay: Schema.optionalWith(Duration, { default: () => DEFAULT_SCALE_DOWN_DELAY_SECONDS })
    .annotations({ description: "Wait this long after the last scaling before scaling down. Defaults to 600." })
    .pipe(Schema.fromKey("scale_down_delay"))
}).annotations({ identifier: "Scaling", description: "Autoscaling rules: `{metric: rps, target, scale_up_delay, scale_down_delay}`." })
export type Scaling = typeof Scaling.Type
