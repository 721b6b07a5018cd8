import { describe, expect, it } from "vitest"
import { bucketMs, LATENCY_BUCKETS, latencyBucket, ServiceMetrics } from "../../src/services/ServiceMetrics.ts"

describe("ServiceMetrics latencies", () => {
  it("puts each latency in the bucket whose bounds hold it, each bucket 10% wider than the one before", () => {
    expect(latencyBucket(0)).toBe(0)
    expect(latencyBucket(0.1)).toBe(0)
    for (const ms of [0.11, 1, 2.5, 10, 99.9, 1_000, 60_000]) {
      const b = latencyBucket(ms)
      expect(0.1 * 1.1 ** (b - 1)).toBeLessThan(ms)
      expect(0.1 * 1.1 ** b).toBeGreaterThanOrEqual(ms * (1 - 1e-9))
      // The value a bucket stands for is within 5% of anything in it.
      expect(Math.abs(bucketMs(b) - ms) / ms).toBeLessThan(0.05)
    }
    expect(latencyBucket(1e12)).toBe(LATENCY_BUCKETS - 1)
  })

  it("reads percentiles exactly alone, and from buckets with other server replicas' histograms", () => {
    const here = new ServiceMetrics()
    for (let i = 1; i <= 100; i++) here.latency(i)
    expect(here.percentile(50)).toBe(51)
    expect(here.snapshot(0).latencyP50Ms).toBe(51)
    expect(here.snapshot(0, [[]]).latencyP99Ms).toBe(100)
    const histogram = here.latencyHistogram()
    expect(histogram.reduce((n, [, c]) => n + c, 0)).toBe(100)
    expect(histogram.map(([b]) => b)).toEqual([...histogram.map(([b]) => b)].sort((x, y) => x - y))
    // Another replica's 300 requests all took ~1 s: the median of the 400 is theirs.
    const there = new ServiceMetrics()
    for (let i = 0; i < 300; i++) there.latency(1_000)
    const both = here.snapshot(0, [there.latencyHistogram()])
    expect(Math.abs(both.latencyP50Ms! - 1_000) / 1_000).toBeLessThan(0.05)
    // The fastest quarter is this replica's: p10 is ~40 ms, to within a bucket.
    expect(Math.abs(here.percentileWith(10, [there.latencyHistogram()])! - 41) / 41).toBeLessThan(0.05)
    expect(new ServiceMetrics().percentileWith(50, [[[latencyBucket(5), 3]]])).toBeCloseTo(bucketMs(latencyBucket(5)), 1)
    expect(new ServiceMetrics().percentileWith(50, [])).toBeUndefined()
  })
})
