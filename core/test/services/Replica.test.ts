// A replica's place in the rotation: failures back off (100 ms doubling to 5 s); an app that
// has not accepted a connection yet is starting, not failing — it is tried again soon, by how
// long its job has run, and that counts against nothing once it listens.
import { describe, expect, it } from "@effect/vitest"
import { Replica } from "../../src/services/ServiceRegistry.ts"

const replica = () => new Replica("main", "sub-1", 0, "web-0-0", undefined as never, 8000, false)

describe("Replica", () => {
  it("backs off after failures: 100 ms, doubling, at most 5 s; a success puts it back", () => {
    const r = replica()
    const now = r.runningSince
    r.failed(now)
    expect(r.inRotation(now + 99)).toBe(false)
    expect(r.inRotation(now + 100)).toBe(true)
    r.failed(now)
    expect(r.outUntil).toBe(now + 200)
    for (let i = 0; i < 10; i++) r.failed(now)
    expect(r.outUntil).toBe(now + 5_000)
    r.succeeded()
    expect([r.failures, r.inRotation(now)]).toEqual([0, true])
  })

  it("a starting app is tried again every 5 ms in its job's first 5 s, then every 100 ms, then every second after a minute", () => {
    const r = replica()
    const t0 = r.runningSince
    r.starting(t0 + 50)
    expect(r.outUntil).toBe(t0 + 55)
    r.starting(t0 + 4_999)
    expect(r.outUntil).toBe(t0 + 5_004)
    r.starting(t0 + 5_000)
    expect(r.outUntil).toBe(t0 + 5_100)
    r.starting(t0 + 60_000)
    expect(r.outUntil).toBe(t0 + 61_000)
  })

  it("waiting for a starting app is not a failure: its first failure once it listens backs off from 100 ms", () => {
    const r = replica()
    const t0 = r.runningSince
    for (let i = 0; i < 20; i++) r.starting(t0 + i * 10)
    expect(r.failures).toBe(0)
    r.failed(t0 + 1_000)
    expect(r.outUntil).toBe(t0 + 1_100)
  })

  it("a request that did not reach a replica that never answered finds it starting: checked again soon, not put out", () => {
    const r = replica()
    const t0 = r.runningSince
    r.listening = true
    r.notReached(t0 + 10, "socket hang up", false)
    expect([r.failures, r.listening, r.outUntil, r.lastError]).toEqual([0, false, t0 + 15, "its app did not answer yet (socket hang up)"])
    // Once it has answered, the same failure puts it out (100 ms, doubling) ...
    r.succeeded()
    r.notReached(t0 + 20, "socket hang up", false)
    expect([r.failures, r.outUntil]).toEqual([1, t0 + 120])
    // ... except on a kept-alive connection it had just closed, which says nothing about it.
    r.notReached(t0 + 30, "socket hang up", true)
    expect([r.failures, r.outUntil]).toEqual([1, t0 + 120])
  })
})
