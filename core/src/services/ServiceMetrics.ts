/**
 * The counts the server keeps of a service's traffic, in memory: requests per second over the
 * last five minutes (what the autoscaler follows), totals by outcome, and recent latencies (to
 * the first byte of the answer) for percentiles in the API and `dstack ps -v`.
 */

/** Seconds of per-second counts kept: the longest scaling window. */
const SECONDS_KEPT = 300
/** Latencies kept for percentiles. */
const LATENCIES_KEPT = 1_024

/**
 * Latencies told to the other server replicas go by buckets: bucket b holds (0.1 ms × 1.1^(b-1),
 * 0.1 ms × 1.1^b], bucket 0 up to 0.1 ms, the last everything from about 75 minutes. A
 * percentile read from buckets is within 5% of the exact one.
 */
const BUCKET_BASE_MS = 0.1
const BUCKET_RATIO = 1.1
const LOG_RATIO = Math.log(BUCKET_RATIO)
export const LATENCY_BUCKETS = 200

/** A latency histogram: `[bucket, count]` pairs, buckets ascending, counts above 0. */
export type LatencyHistogram = ReadonlyArray<readonly [number, number]>

export const latencyBucket = (ms: number): number =>
  ms <= BUCKET_BASE_MS ? 0 : Math.min(LATENCY_BUCKETS - 1, Math.ceil(Math.log(ms / BUCKET_BASE_MS) / LOG_RATIO - 1e-9))

/** The latency a bucket stands for: the geometric middle of its bounds. */
export const bucketMs = (bucket: number): number => (bucket === 0 ? BUCKET_BASE_MS : BUCKET_BASE_MS * BUCKET_RATIO ** (bucket - 0.5))

export interface ServiceMetricsSnapshot {
  readonly requests: number
  readonly errors: number
  /** Requests per second over the last 60 s. */
  readonly rps: number
  readonly latencyP50Ms: number | undefined
  readonly latencyP99Ms: number | undefined
}

export class ServiceMetrics {
  requests = 0
  /** Answers the proxy itself made 5xx (no replica, a replica unreachable). */
  errors = 0
  private readonly counts = new Float64Array(SECONDS_KEPT)
  private readonly seconds = new Float64Array(SECONDS_KEPT)
  private readonly latencies = new Float64Array(LATENCIES_KEPT)
  private latencyCount = 0

  /** Counts one request arriving at `now` (epoch ms). */
  request(now: number): void {
    this.requests++
    this.add(Math.floor(now / 1000), 1)
  }

  /** Adds `n` requests to an epoch second (counted by another server replica). */
  add(second: number, n: number): void {
    const slot = ((second % SECONDS_KEPT) + SECONDS_KEPT) % SECONDS_KEPT
    if (this.seconds[slot] !== second) {
      // A second older than the one the slot holds now is past the window: dropped.
      if (this.seconds[slot] > second) return
      this.seconds[slot] = second
      this.counts[slot] = 0
    }
    this.counts[slot] += n
  }

  /**
   * The whole seconds after `after` and before the current one with requests, as
   * `[epoch second, count]` (the seconds kept at most), and the last second they cover.
   */
  countsSince(after: number, now: number): { readonly counts: Array<[number, number]>; readonly upTo: number } {
    const upTo = Math.floor(now / 1000) - 1
    const counts: Array<[number, number]> = []
    for (let s = Math.max(after + 1, upTo - SECONDS_KEPT + 1); s <= upTo; s++) {
      const slot = ((s % SECONDS_KEPT) + SECONDS_KEPT) % SECONDS_KEPT
      if (this.seconds[slot] === s && this.counts[slot] > 0) counts.push([s, this.counts[slot]])
    }
    return { counts, upTo }
  }

  latency(ms: number): void {
    this.latencies[this.latencyCount++ % LATENCIES_KEPT] = ms
  }

  /** Latencies measured since this one started (a report tells the others only when it changed). */
  get latenciesMeasured(): number {
    return this.latencyCount
  }

  /** The latencies kept, by bucket. */
  latencyHistogram(): LatencyHistogram {
    const n = Math.min(this.latencyCount, LATENCIES_KEPT)
    const counts = new Map<number, number>()
    for (let i = 0; i < n; i++) {
      const b = latencyBucket(this.latencies[i])
      counts.set(b, (counts.get(b) ?? 0) + 1)
    }
    return [...counts].sort((x, y) => x[0] - y[0])
  }

  /**
   * A percentile of the latencies kept here and those other server replicas keep (their
   * histograms): exact when there are none, else read from the buckets of them all.
   */
  percentileWith(p: number, others: ReadonlyArray<LatencyHistogram>): number | undefined {
    return this.percentilesWith([p], others)[0]
  }

  /** Several percentiles as `percentileWith` reads them, the latencies sorted or merged once. */
  percentilesWith(ps: ReadonlyArray<number>, others: ReadonlyArray<LatencyHistogram>): Array<number | undefined> {
    if (others.every((h) => h.length === 0)) {
      const n = Math.min(this.latencyCount, LATENCIES_KEPT)
      const sorted = Array.from(this.latencies.subarray(0, n)).sort((a, b) => a - b)
      return ps.map((p) => (n === 0 ? undefined : sorted[Math.min(n - 1, Math.floor((p / 100) * n))]))
    }
    const counts = new Map<number, number>()
    for (const histogram of [this.latencyHistogram(), ...others]) {
      for (const [b, n] of histogram) counts.set(b, (counts.get(b) ?? 0) + n)
    }
    const buckets = [...counts].sort((x, y) => x[0] - y[0])
    const total = buckets.reduce((sum, [, n]) => sum + n, 0)
    return ps.map((p) => {
      // The same rank as `percentile` takes of sorted values.
      const rank = Math.min(total - 1, Math.floor((p / 100) * total))
      let seen = 0
      for (const [b, n] of buckets) {
        seen += n
        if (seen > rank) return Math.round(bucketMs(b) * 100) / 100
      }
      return undefined
    })
  }

  /** Requests per second over the `windowSeconds` before `now`, the current second left out when it has just begun. */
  rps(now: number, windowSeconds: number): number {
    const current = Math.floor(now / 1000)
    let total = 0
    for (let s = current - windowSeconds + 1; s <= current; s++) {
      const slot = ((s % SECONDS_KEPT) + SECONDS_KEPT) % SECONDS_KEPT
      if (this.seconds[slot] === s) total += this.counts[slot]
    }
    return total / windowSeconds
  }

  percentile(p: number): number | undefined {
    return this.percentilesWith([p], [])[0]
  }

  /** `others`: the latency histograms of the other server replicas, for percentiles of them all. */
  snapshot(now: number, others: ReadonlyArray<LatencyHistogram> = []): ServiceMetricsSnapshot {
    const [p50, p99] = this.percentilesWith([50, 99], others)
    return {
      requests: this.requests,
      errors: this.errors,
      rps: this.rps(now, 60),
      latencyP50Ms: p50,
      latencyP99Ms: p99
    }
  }
}
