/**
 * A service's `rate_limits` per client IP: a token bucket per (service, prefix, client) that
 * fills at `rps` and holds `burst + 1` requests; the longest prefix that matches the path (after
 * the service's own prefix) applies. A request over the limit is answered 429.
 */
import type { RateLimit } from "../domain/Scaling.ts"
import type { ServiceEntry } from "./ServiceRegistry.ts"

/** Past this many buckets the oldest are dropped (a full bucket is the same as none). */
const MAX_BUCKETS = 100_000

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

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>()

  /** Undefined when the request may go on; a 429 answer when the client is over the limit. */
  check(entry: ServiceEntry, path: string, client: string, now: number): Response | undefined {
    const limits = entry.configuration.rateLimits
    if (limits === undefined || limits.length === 0) return undefined
    const limit = limitFor(limits, path)
    if (limit === undefined) return undefined
    const key = `${entry.runId}\u0000${limit.prefix}\u0000${client}`
    const capacity = limit.burst + 1
    let bucket = this.buckets.get(key)
    if (bucket === undefined) {
      if (this.buckets.size >= MAX_BUCKETS) this.buckets.delete(this.buckets.keys().next().value!)
      bucket = { tokens: capacity, at: now }
      this.buckets.set(key, bucket)
    }
    bucket.tokens = Math.min(capacity, bucket.tokens + ((now - bucket.at) / 1000) * limit.rps)
    bucket.at = now
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1
      return undefined
    }
    const wait = Math.ceil((1 - bucket.tokens) / limit.rps)
    return new Response(JSON.stringify({ detail: [{ msg: `Too many requests: the limit under ${limit.prefix} is ${limit.rps} per second per client`, code: "rate_limited" }] }), {
      status: 429,
      headers: { "content-type": "application/json", "retry-after": String(Math.max(1, wait)) }
    })
  }
}
