/**
 * The counts the server keeps of a service's traffic, in memory: requests per second over the
 * last five minutes (what the autoscaler follows), totals by outcome, and recent latencies (to
 * the first byte of the answer) for percentiles in the API and `dstack ps -v`.
 */

/** Seconds of per-second counts kept: the longest scaling window. */
const SECONDS_KEPT = 300
/** Latencies kept for percentiles. */
const LATENCIES_KEPT = 1_024

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
    const n = Math.min(this.latencyCount, LATENCIES_KEPT)
    if (n === 0) return undefined
    const sorted = Array.from(this.latencies.subarray(0, n)).sort((a, b) => a - b)
    return sorted[Math.min(n - 1, Math.floor((p / 100) * n))]
  }

  snapshot(now: number): ServiceMetricsSnapshot {
    return {
      requests: this.requests,
      errors: this.errors,
      rps: this.rps(now, 60),
      latencyP50Ms: this.percentile(50),
      latencyP99Ms: this.percentile(99)
    }
  }
}
