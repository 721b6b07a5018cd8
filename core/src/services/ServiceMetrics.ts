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
    const second = Math.floor(now / 1000)
    const slot = second % SECONDS_KEPT
    if (this.seconds[slot] !== second) {
      this.seconds[slot] = second
      this.counts[slot] = 0
    }
    this.counts[slot]++
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
