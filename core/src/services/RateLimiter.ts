/**
 * A service's `rate_limits` per client IP: a token bucket per (service, prefix, client) that
 * fills at `rps` and holds `burst + 1` requests; the longest prefix that matches the path (after
 * the service's own prefix) applies. A request over the limit is answered 429.
 *
 * Behind several server replicas each keeps its own buckets and tells the others, about once a
 * second, the requests it let through per bucket (`takeAdmitted`); each spends those from its
 * own bucket for that client (`spend`). A client spread over the servers so gets the rate once,
 * not once per server: over any time T it gets at most about `rps × (T + 1 s)` plus a burst per
 * server, the second being how late the others hear of what one server let through.
 */
import type { RateLimit } from "../domain/Scaling.ts"
import type { ServiceEntry } from "./ServiceRegistry.ts"

/** Past this many buckets the oldest are dropped (a full bucket is the same as none). */
const MAX_BUCKETS = 100_000

/** One server's admissions for one bucket: `[run id, prefix, client, requests]`. */
export type Admitted = readonly [string, string, string, number]

interface Bucket {
  tokens: number
  at: number
}

/** The limit that applies to `path`: the one with the longest matching prefix. */
export const limitFor = (limits: ReadonlyArray<RateLimit>, path: string): RateLimit | undefined => {
  let best: RateLimit | undefined
  for (const limit of limits) {
    if (path.startsWith(limit.prefix) && (best === undefined || limit.prefix.length > best.prefix.length)) best = limit
  }
  return best
}

const keyOf = (runId: string, prefix: string, client: string) => `${runId}\u0000${prefix}\u0000${client}`

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>()
  /** Requests let through since the last `takeAdmitted`, by bucket, while shared. */
  private admitted = new Map<string, { readonly runId: string; readonly prefix: string; readonly client: string; n: number }>()

  /** @param shared whether other server replicas hear of this one's admissions (`takeAdmitted`). */
  constructor(readonly shared = false) {}

  /** The bucket for a key, filled up to `now` at the limit's rate (made full when new). */
  private bucket(key: string, limit: RateLimit, now: number): Bucket {
    const capacity = limit.burst + 1
    let bucket = this.buckets.get(key)
    if (bucket === undefined) {
      if (this.buckets.size >= MAX_BUCKETS) this.buckets.delete(this.buckets.keys().next().value!)
      bucket = { tokens: capacity, at: now }
      this.buckets.set(key, bucket)
    }
    if (now > bucket.at) {
      bucket.tokens = Math.min(capacity, bucket.tokens + ((now - bucket.at) / 1000) * limit.rps)
      bucket.at = now
    }
    return bucket
  }

  /** Undefined when the request may go on; a 429 answer when the client is over the limit. */
  check(entry: ServiceEntry, path: string, client: string, now: number): Response | undefined {
    const limits = entry.configuration.rateLimits
    if (limits === undefined || limits.length === 0) return undefined
    const limit = limitFor(limits, path)
    if (limit === undefined) return undefined
    const key = keyOf(entry.runId, limit.prefix, client)
    const bucket = this.bucket(key, limit, now)
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1
      if (this.shared) {
        const seen = this.admitted.get(key)
        if (seen === undefined) this.admitted.set(key, { runId: entry.runId, prefix: limit.prefix, client, n: 1 })
        else seen.n++
      }
      return undefined
    }
    const wait = Math.ceil((1 - bucket.tokens) / limit.rps)
    return new Response(JSON.stringify({ detail: [{ msg: `Too many requests: the limit under ${limit.prefix} is ${limit.rps} per second per client`, code: "rate_limited" }] }), {
      status: 429,
      headers: { "content-type": "application/json", "retry-after": String(Math.max(1, wait)) }
    })
  }

  /**
   * The requests let through since the last call, per bucket, for the other server replicas:
   * the `max` largest when there are more (a client seen once in a second is far from any limit).
   */
  takeAdmitted(max: number): Array<Admitted> {
    const taken = [...this.admitted.values()]
    this.admitted = new Map()
    if (taken.length > max) taken.sort((x, y) => y.n - x.n).length = max
    return taken.map((a) => [a.runId, a.prefix, a.client, a.n] as const)
  }

  /**
   * Spends from a client's bucket what another server replica let through. The bucket may go
   * below zero: the client then waits here until the rate has paid for those requests too.
   */
  spend(admitted: Admitted, limit: RateLimit, now: number): void {
    const [runId, prefix, client, n] = admitted
    if (!(n > 0) || !Number.isFinite(n)) return
    this.bucket(keyOf(runId, prefix, client), limit, now).tokens -= n
  }
}
