/**
 * The rolling deployment's next step as a pure function (max surge 1, none unavailable): while
 * some serving replicas run an older spec, one new replica is started when none is starting and
 * the service has no more than its desired count; once a new one is ready (running, probes
 * passed, accepting connections), one old replica is drained — it takes no new request and stops
 * when its requests in flight have ended. So the ready count never falls below the desired one.
 */

export interface RolloutReplica {
  /** The replica job's latest submission id. */
  readonly id: string
  readonly replicaNum: number
  /** Its job spec is the one the run's current spec gives. */
  readonly upToDate: boolean
  /** Running, its probes passed and its app accepting connections. */
  readonly ready: boolean
}

export interface RolloutStep {
  /** Start one replica of the new spec. */
  readonly start: boolean
  /** The old replica to drain now, if any. */
  readonly drain: string | undefined
}

/**
 * The step for the serving replicas (draining ones left out) and the replica count the service
 * wants; no step when no replica is out of date.
 */
export const rolloutStep = (serving: ReadonlyArray<RolloutReplica>, desired: number): RolloutStep => {
  const old = serving.filter((r) => !r.upToDate)
  if (old.length === 0) return { start: false, drain: undefined }
  const fresh = serving.filter((r) => r.upToDate)
  const freshReady = fresh.filter((r) => r.ready).length
  const starting = fresh.length - freshReady
  const start = starting === 0 && fresh.length < desired && serving.length <= desired
  // An old replica goes once the new ready ones and the other old ones still make the desired
  // count: old ones not ready (still starting) first, then the oldest.
  const drain = freshReady + old.length > desired
    ? [...old].sort((a, b) => Number(a.ready) - Number(b.ready) || a.replicaNum - b.replicaNum)[0].id
    : undefined
  return { start, drain }
}
