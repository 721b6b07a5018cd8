/**
 * The autoscaling decision as a pure function: how many replicas a service wants now, from its
 * requests per second, its `replicas` range and `scaling` rules (upstream's: desired =
 * ceil(rps / target) within the range; a scale-up waits `scale_up_delay` since the last scaling
 * step, except from zero; a scale-down waits `scale_down_delay`), and whether a request is
 * waiting for a replica (which asks for at least one at once).
 */
import type { Range } from "../domain/Range.ts"
import type { Scaling } from "../domain/Scaling.ts"

export interface ScalingInput {
  readonly replicas: Range
  readonly scaling: Scaling | undefined
  /** Replicas running or starting now (draining ones left out). */
  readonly current: number
  /** Requests per second over the scaling window. */
  readonly rps: number
  /** A request waits and no replica serves it. */
  readonly demand: boolean
  /** When the service last scaled (epoch ms); undefined when never. */
  readonly lastScaledAt: number | undefined
  readonly now: number
}

/** The replica count the service should have now (`current` when a delay holds a change back). */
export const desiredReplicas = (input: ScalingInput): number => {
  const min = input.replicas.min ?? 0
  const max = input.replicas.max ?? Math.max(min, 1)
  if (input.scaling === undefined || min === max) return min
  let wanted = Math.min(max, Math.max(min, Math.ceil(input.rps / input.scaling.target)))
  if (input.demand && wanted === 0) wanted = Math.min(max, 1)
  if (wanted === input.current) return wanted
  const since = input.lastScaledAt === undefined ? Infinity : input.now - input.lastScaledAt
  if (wanted > input.current) {
    // From zero there is no wait: a caller is being held.
    return input.current === 0 || since >= input.scaling.scaleUpDelay * 1000 ? wanted : input.current
  }
  return since >= input.scaling.scaleDownDelay * 1000 ? wanted : input.current
}
