// The autoscaling decision and the rate limiter, as pure functions of their inputs.
import { describe, expect, it } from "@effect/vitest"
import { desiredReplicas, type ScalingInput } from "../../src/services/Autoscaling.ts"
import { limitFor, RateLimiter } from "../../src/services/RateLimiter.ts"
import type { ServiceEntry } from "../../src/services/ServiceRegistry.ts"

const scaling = { metric: "rps" as const, target: 10, window: 60, scaleUpDelay: 300, scaleDownDelay: 600 }
const base: ScalingInput = { replicas: { min: 0, max: 4 }, scaling, current: 1, rps: 10, demand: false, lastScaledAt: undefined, now: 1_000_000 }

describe("desiredReplicas", () => {
  it("is ceil(rps / target) within the range", () => {
    expect(desiredReplicas({ ...base, rps: 25 })).toBe(3)
    expect(desiredReplicas({ ...base, rps: 1_000 })).toBe(4)
    expect(desiredReplicas({ ...base, replicas: { min: 2, max: 4 }, rps: 0 })).toBe(2)
  })
  it("a fixed count or no scaling is the count", () => {
    expect(desiredReplicas({ ...base, replicas: { min: 2, max: 2 }, rps: 100 })).toBe(2)
    expect(desiredReplicas({ ...base, scaling: undefined, replicas: { min: 1, max: 3 }, rps: 100 })).toBe(1)
  })
  it("waits scale_up_delay since the last scaling to scale up, except from zero", () => {
    expect(desiredReplicas({ ...base, rps: 25, lastScaledAt: base.now - 299_000 })).toBe(1)
    expect(desiredReplicas({ ...base, rps: 25, lastScaledAt: base.now - 300_000 })).toBe(3)
    expect(desiredReplicas({ ...base, current: 0, rps: 5, lastScaledAt: base.now - 1 })).toBe(1)
  })
  it("waits scale_down_delay to scale down", () => {
    expect(desiredReplicas({ ...base, current: 3, rps: 0, lastScaledAt: base.now - 599_000 })).toBe(3)
    expect(desiredReplicas({ ...base, current: 3, rps: 0, lastScaledAt: base.now - 600_000 })).toBe(0)
  })
  it("a request held at zero asks for one replica at once, not past the range", () => {
    expect(desiredReplicas({ ...base, current: 0, rps: 0, demand: true })).toBe(1)
    expect(desiredReplicas({ ...base, replicas: { min: 0, max: 0 }, current: 0, rps: 0, demand: true })).toBe(0)
  })
})

describe("rate limits", () => {
  const entry = (limits: ReadonlyArray<{ prefix: string; rps: number; burst: number }>) =>
    ({ runId: "r", configuration: { rateLimits: limits.map((l) => ({ ...l, key: { type: "ip_address" } })) } }) as unknown as ServiceEntry
  it("the longest matching prefix applies", () => {
    const limits = entry([{ prefix: "/", rps: 1, burst: 0 }, { prefix: "/api/", rps: 5, burst: 0 }]).configuration.rateLimits!
    expect(limitFor(limits, "/api/x")?.prefix).toBe("/api/")
    expect(limitFor(limits, "/other")?.prefix).toBe("/")
  })
  it("lets burst + 1 requests through at once per client, then one per 1/rps, and answers 429 with Retry-After", async () => {
    const limiter = new RateLimiter()
    const e = entry([{ prefix: "/", rps: 2, burst: 1 }])
    expect(limiter.check(e, "/", "a", 0)).toBeUndefined()
    expect(limiter.check(e, "/", "a", 0)).toBeUndefined()
    const refused = limiter.check(e, "/", "a", 0)!
    expect(refused.status).toBe(429)
    expect(refused.headers.get("retry-after")).toBe("1")
    expect(JSON.stringify(await refused.json())).toMatch(/limit under \/ is 2 per second per client/)
    // Another client has its own bucket; half a second refills one request.
    expect(limiter.check(e, "/", "b", 0)).toBeUndefined()
    expect(limiter.check(e, "/", "a", 500)).toBeUndefined()
    expect(limiter.check(e, "/", "a", 500)?.status).toBe(429)
  })
  it("shared between server replicas: each spends what the others let through, so a client gets the rate once", () => {
    const e = entry([{ prefix: "/", rps: 2, burst: 1 }])
    const limit = e.configuration.rateLimits![0]
    const a = new RateLimiter(true)
    const b = new RateLimiter(true)
    // A lets two requests through; B hears of them and has nothing left for that client.
    expect(a.check(e, "/x", "c", 0)).toBeUndefined()
    expect(a.check(e, "/x", "c", 0)).toBeUndefined()
    const told = a.takeAdmitted(100)
    expect(told).toEqual([["r", "/", "c", 2]])
    expect(a.takeAdmitted(100)).toEqual([])
    for (const t of told) b.spend(t, limit, 0)
    const refused = b.check(e, "/x", "c", 0)!
    expect(refused.status).toBe(429)
    expect(refused.headers.get("retry-after")).toBe("1")
    // Another client, and the same client once the rate has paid for them, go through.
    expect(b.check(e, "/x", "d", 0)).toBeUndefined()
    expect(b.check(e, "/x", "c", 500)).toBeUndefined()
    // A debt: B spends more than the bucket holds, and waits longer before the next one.
    b.spend(["r", "/", "e", 6], limit, 1_000)
    expect(b.check(e, "/x", "e", 1_000)!.headers.get("retry-after")).toBe("3")
    expect(b.check(e, "/x", "e", 3_000)?.status).toBe(429)
    expect(b.check(e, "/x", "e", 3_500)).toBeUndefined()
  })
  it("tells the busiest buckets first when there are more than a report carries, and nothing when not shared", () => {
    const e = entry([{ prefix: "/", rps: 100, burst: 100 }])
    const a = new RateLimiter(true)
    for (const [client, n] of [["x", 1], ["y", 5], ["z", 3]] as const) for (let i = 0; i < n; i++) a.check(e, "/", client, 0)
    expect(a.takeAdmitted(2)).toEqual([["r", "/", "y", 5], ["r", "/", "z", 3]])
    const alone = new RateLimiter()
    alone.check(e, "/", "x", 0)
    expect(alone.takeAdmitted(10)).toEqual([])
  })
})
