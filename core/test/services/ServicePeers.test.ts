import { describe, expect, it } from "vitest"
import { encodeAdmitted, encodeBye, encodeReports, PEER_LIVE_MS, type PeerReport, ServicePeers, type ServiceReport } from "../../src/services/ServicePeers.ts"

const T0 = 1_800_000_000_000
const second = Math.floor(T0 / 1000)
const report = (from: string, s: Record<string, ServiceReport>): string => JSON.stringify({ v: 1, from, s } satisfies PeerReport)
const svc = (extra: Partial<ServiceReport> = {}): ServiceReport => ({ p: "main", n: "web", ...extra })

describe("ServicePeers", () => {
  it("lets the replica whose id sorts first decide, among those heard from lately", () => {
    const peers = new ServicePeers("b-server")
    expect(peers.decides(T0)).toBe(true)
    peers.hear(report("c-server", {}), T0)
    expect(peers.decides(T0)).toBe(true)
    peers.hear(report("a-server", {}), T0)
    expect(peers.decider(T0)).toBe("a-server")
    expect(peers.decides(T0 + PEER_LIVE_MS)).toBe(false)
    // Not heard from for longer: no longer counted, and this one decides again.
    expect(peers.decides(T0 + PEER_LIVE_MS + 1)).toBe(true)
    expect(peers.liveIds(T0 + PEER_LIVE_MS + 1)).toEqual([])
  })

  it("ignores its own messages and what does not read as a report", () => {
    const peers = new ServicePeers("b-server")
    expect(peers.hear(report("b-server", { r1: svc({ c: [[second, 5]] }) }), T0)).toBeUndefined()
    expect(peers.hear("not json", T0)).toBeUndefined()
    expect(peers.hear(JSON.stringify({ v: 2, from: "a-server", s: {} }), T0)).toBeUndefined()
    expect(peers.hear("null", T0)).toBeUndefined()
    expect(peers.liveIds(T0)).toEqual([])
    expect(peers.rps("r1", T0, 30)).toBe(0)
  })

  it("sums the others' counts over the window, and forgets a replica gone quiet", () => {
    const peers = new ServicePeers("b-server")
    peers.hear(report("a-server", { r1: svc({ c: [[second - 2, 30], [second - 1, 30]] }) }), T0)
    peers.hear(report("c-server", { r1: svc({ c: [[second - 1, 30]] }), r2: svc({ n: "other", c: [[second - 1, 9]] }) }), T0)
    // Counts arriving in later reports add up.
    peers.hear(report("a-server", { r1: svc({ c: [[second, 30]] }) }), T0 + 500)
    expect(peers.rps("r1", T0 + 500, 30)).toBe(120 / 30)
    expect(peers.rps("r2", T0 + 500, 30)).toBe(9 / 30)
    expect(peers.services(T0 + 500)).toEqual(new Map([["r1", { project: "main", runName: "web" }], ["r2", { project: "main", runName: "other" }]]))
    peers.hear(report("c-server", { r1: svc({ t: [7, 1] }) }), T0)
    peers.hear(report("a-server", { r1: svc({ t: [40, 2] }) }), T0 + 500)
    expect(peers.totals("r1", T0 + 500)).toEqual([47, 3])
    expect(peers.totals("r2", T0 + 500)).toEqual([0, 0])
    // c-server not heard from since T0: its counts no longer count.
    expect(peers.rps("r1", T0 + PEER_LIVE_MS + 100, 30)).toBe(90 / 30)
    expect(peers.totals("r1", T0 + PEER_LIVE_MS + 100)).toEqual([40, 2])
    // A service a replica stops reporting is forgotten after a while, and the replica with it once quiet.
    const later = T0 + 10 * PEER_LIVE_MS + 1_000
    peers.hear(report("a-server", { r2: svc({ n: "other" }) }), later)
    expect(peers.services(later)).toEqual(new Map([["r2", { project: "main", runName: "other" }]]))
    expect(peers.rps("r1", later, 30)).toBe(0)
    expect(peers.liveIds(later)).toEqual(["a-server"])
  })

  it("says when another replica last had a request waiting with no replica", () => {
    const peers = new ServicePeers("b-server")
    peers.hear(report("a-server", { r1: svc() }), T0)
    expect(peers.demandAt("r1", T0)).toBe(0)
    peers.hear(report("a-server", { r1: svc({ d: 1 }) }), T0 + 100)
    expect(peers.demandAt("r1", T0 + 100)).toBe(T0 + 100)
    expect(peers.demandAt("r2", T0 + 100)).toBe(0)
  })

  it("follows the decider's drains, and counts a drain done only when every live replica acknowledged it with nothing in flight", () => {
    // The deciding replica's view.
    const decider = new ServicePeers("a-server")
    const started = T0 - 1000
    decider.hear(report("b-server", { r1: svc({ ack: { sub1: [started, 1] } }) }), T0)
    decider.hear(report("c-server", { r1: svc({ ack: { sub1: [started, 0] } }) }), T0)
    expect(decider.drainedEverywhere("r1", "sub1", started, T0)).toBe(false)
    decider.hear(report("b-server", { r1: svc({ ack: { sub1: [started, 0] } }) }), T0 + 200)
    expect(decider.drainedEverywhere("r1", "sub1", started, T0 + 200)).toBe(true)
    // An acknowledgement of an earlier drain of the same replica does not count for this one.
    expect(decider.drainedEverywhere("r1", "sub1", started + 5, T0 + 200)).toBe(false)
    // A replica heard from that never mentions the service has not acknowledged it.
    decider.hear(report("d-server", {}), T0 + 300)
    expect(decider.drainedEverywhere("r1", "sub1", started, T0 + 300)).toBe(false)
    // Once it is gone quiet it is not waited for.
    decider.hear(report("b-server", { r1: svc({ ack: { sub1: [started, 0] } }) }), T0 + PEER_LIVE_MS + 250)
    decider.hear(report("c-server", { r1: svc({ ack: { sub1: [started, 0] } }) }), T0 + PEER_LIVE_MS + 250)
    expect(decider.drainedEverywhere("r1", "sub1", started, T0 + PEER_LIVE_MS + 301)).toBe(true)

    // Another replica's view: it reads the drains off the decider's reports only.
    const other = new ServicePeers("b-server")
    other.hear(report("c-server", { r1: svc({ dr: { sub9: started } }) }), T0)
    other.hear(report("a-server", { r1: svc({ dr: { sub1: started } }) }), T0)
    expect(other.decidersDrains("r1", T0)).toEqual({ sub1: started })
    expect(other.decidersView("r1", T0)).toEqual({ want: undefined, deployment: undefined })
    other.hear(report("a-server", { r1: svc({ dr: { sub1: started }, w: 2, dep: { outdated: 1, message: "rolling" } }) }), T0 + 500)
    expect(other.decidersView("r1", T0 + 500)).toEqual({ want: 2, deployment: { outdated: 1, message: "rolling" } })
    expect(decider.decidersView("r1", T0)).toBeUndefined()
    // The decider's next report without it ends the drain.
    other.hear(report("a-server", { r1: svc() }), T0 + 1000)
    expect(other.decidersDrains("r1", T0 + 1000)).toEqual({})
    // The decider itself follows no one's drains.
    expect(decider.decidersDrains("r1", T0)).toEqual({})
  })

  it("splits a report over messages that each fit, and sends an empty one to say it is there", () => {
    const services: Array<[string, ServiceReport]> = Array.from({ length: 60 }, (_, i) => [`run-${i}`, svc({ n: `service-${i}`, c: [[second, i]] })])
    const payloads = encodeReports("a-server", services, 1_000)
    expect(payloads.length).toBeGreaterThan(1)
    for (const p of payloads) expect(new TextEncoder().encode(p).length).toBeLessThanOrEqual(1_000)
    const peers = new ServicePeers("b-server")
    for (const p of payloads) peers.hear(p, T0)
    expect(peers.services(T0).size).toBe(60)
    expect(peers.rps("run-59", T0, 30)).toBe(59 / 30)
    expect(encodeReports("a-server", [], 1_000)).toEqual([JSON.stringify({ v: 1, from: "a-server", s: {} })])
    // What fits one message is the report as JSON writes it.
    const few = services.slice(0, 3)
    expect(encodeReports("a-server", few, 7_900)).toEqual([JSON.stringify({ v: 1, from: "a-server", s: Object.fromEntries(few) })])
  })

  it("carries the requests let through under rate limits in messages that each fit, none when there are none", () => {
    const admitted = Array.from({ length: 200 }, (_, i) => ["run-1", "/api/", `10.0.${i >> 8}.${i & 255}`, i + 1] as const)
    const payloads = encodeAdmitted("a-server", admitted, 1_000)
    expect(payloads.length).toBeGreaterThan(1)
    for (const p of payloads) expect(new TextEncoder().encode(p).length).toBeLessThanOrEqual(1_000)
    const peers = new ServicePeers("b-server")
    const heard = payloads.flatMap((p) => peers.hear(p, T0)?.rl ?? [])
    expect(heard).toEqual(admitted)
    // The sender counts as heard from; no service is reported by these messages.
    expect(peers.liveIds(T0)).toEqual(["a-server"])
    expect(peers.services(T0).size).toBe(0)
    expect(encodeAdmitted("a-server", [], 1_000)).toEqual([])
    expect(encodeAdmitted("a-server", admitted.slice(0, 2), 7_900)).toEqual([JSON.stringify({ v: 1, from: "a-server", s: {}, rl: admitted.slice(0, 2) })])
  })

  it("keeps each live replica's latencies until it sends new ones, and drops what does not read as a histogram", () => {
    const peers = new ServicePeers("b-server")
    peers.hear(report("a-server", { r1: svc({ l: [[40, 3], [60, 1]] }) }), T0)
    peers.hear(report("c-server", { r1: svc({ l: [[10, 2]] }) }), T0)
    // A report without them leaves the last ones; a new one replaces them.
    peers.hear(report("a-server", { r1: svc() }), T0 + 1_000)
    expect(peers.latencies("r1", T0 + 1_000)).toEqual([[[40, 3], [60, 1]], [[10, 2]]])
    peers.hear(report("a-server", { r1: svc({ l: [[41, 5]] }) }), T0 + 2_000)
    peers.hear(report("c-server", { r1: svc({ l: [[-1, 2]] as never }) }), T0 + 2_000)
    expect(peers.latencies("r1", T0 + 2_000)).toEqual([[[41, 5]]])
    // A replica gone quiet no longer counts.
    expect(peers.latencies("r1", T0 + 2_000 + PEER_LIVE_MS + 1)).toEqual([])
  })

  it("forgets a replica that says it stops at once: the next one decides without waiting", () => {
    const peers = new ServicePeers("b-server")
    peers.hear(report("a-server", { r1: svc({ c: [[second, 8]] }) }), T0)
    expect(peers.decides(T0)).toBe(false)
    expect(peers.hear(encodeBye("a-server"), T0 + 100)?.bye).toBe(1)
    expect(peers.decides(T0 + 100)).toBe(true)
    expect(peers.liveIds(T0 + 100)).toEqual([])
    expect(peers.rps("r1", T0 + 100, 30)).toBe(0)
    // Its own goodbye, echoed back by the store, is not heard.
    expect(peers.hear(encodeBye("b-server"), T0 + 100)).toBeUndefined()
  })
})
