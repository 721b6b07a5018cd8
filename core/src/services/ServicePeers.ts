/**
 * What server replicas sharing one store tell each other about services, so that they autoscale
 * as one: each publishes, once a second over the store's peer messages (`StateStoreService.peers`),
 * a report of the services it follows — its requests per second, whether a request waits there
 * with no replica, and its part in drains. One replica decides for every service: the one whose
 * engine owner id sorts first among those heard from in the last few seconds (itself included).
 * It scales on the sum of everyone's counts and publishes the replicas it drains; the others take
 * those out of their rotation and report how many of their requests are still in flight on each,
 * and a drained replica is stopped only once every replica heard from reports none there. Each
 * also tells the others the requests it let through under `rate_limits`, which they spend from
 * their own buckets for those clients (RateLimiter.ts). A replica that stops says so, and the
 * next one decides at once; one that dies is forgotten after PEER_LIVE_MS of silence.
 *
 * A store without peer messages (one process) leaves this out: the server decides alone.
 */
import type { Admitted } from "./RateLimiter.ts"
import { LATENCY_BUCKETS, type LatencyHistogram, ServiceMetrics } from "./ServiceMetrics.ts"

/** A replica heard from within this long is counted (reports come every second). */
export const PEER_LIVE_MS = 3_000

/** One service in a report. */
export interface ServiceReport {
  /** The service's project and run name (the decider follows a service it hears of). */
  readonly p: string
  readonly n: string
  /** Requests per whole second since the sender's last report: `[epoch second, count]`. */
  readonly c?: ReadonlyArray<readonly [number, number]>
  /** The sender's requests and proxy errors since it started. */
  readonly t?: readonly [number, number]
  /** The latencies the sender keeps, by bucket (ServiceMetrics.ts): sent when they changed, and every 10 s. */
  readonly l?: LatencyHistogram
  /** A request waits at the sender with no replica to take it. */
  readonly d?: 1
  /** From the decider: the replicas (submission ids) it drains, each with when it began (epoch ms). */
  readonly dr?: Readonly<Record<string, number>>
  /** From the decider: the replica count it wants, and a rolling deployment under way. */
  readonly w?: number
  readonly dep?: { readonly outdated: number; readonly message: string }
  /** From the others: for each replica the decider drains, `[when it began, requests in flight there]`. */
  readonly ack?: Readonly<Record<string, readonly [number, number]>>
}

/** What one replica publishes (split over several messages when it does not fit one). */
export interface PeerReport {
  readonly v: 1
  /** The sender's engine owner id. */
  readonly from: string
  /** Services by run id. */
  readonly s: Readonly<Record<string, ServiceReport>>
  /** The requests the sender let through under rate limits since its last report, per bucket. */
  readonly rl?: ReadonlyArray<Admitted>
  /** The sender stops: forget it now. */
  readonly bye?: 1
}

/** What a replica says as it stops (`PeerReport.bye`). */
export const encodeBye = (from: string): string => JSON.stringify({ v: 1, from, s: {}, bye: 1 } satisfies PeerReport)

interface HeardService {
  readonly project: string
  readonly runName: string
  heardAt: number
  readonly metrics: ServiceMetrics
  demandAt: number
  drains: Readonly<Record<string, number>> | undefined
  acks: Readonly<Record<string, readonly [number, number]>> | undefined
  want: number | undefined
  deployment: ServiceReport["dep"]
  totals: readonly [number, number]
  latencies: LatencyHistogram
}

interface Peer {
  heardAt: number
  readonly services: Map<string, HeardService>
}

/** Joins serialized parts into payloads of at most `maxBytes` each: `head`, parts split by commas, `tail`. */
const pack = (head: string, tail: string, parts: Iterable<string>, maxBytes: number): Array<string> => {
  const utf8 = new TextEncoder()
  const empty = utf8.encode(head).length + utf8.encode(tail).length
  const payloads: Array<string> = []
  let taken: Array<string> = []
  let bytes = empty
  for (const part of parts) {
    const size = utf8.encode(part).length
    // A part alone goes out however large it is (the store refuses it then, saying so).
    if (taken.length > 0 && bytes + 1 + size > maxBytes) {
      payloads.push(`${head}${taken.join(",")}${tail}`)
      taken = []
      bytes = empty
    }
    bytes += (taken.length > 0 ? 1 : 0) + size
    taken.push(part)
  }
  if (taken.length > 0) payloads.push(`${head}${taken.join(",")}${tail}`)
  return payloads
}

/**
 * Serializes a report, split by services into payloads of at most `maxBytes`: each service is
 * serialized once, and a payload is the report's head and the services that fit.
 */
export const encodeReports = (from: string, services: ReadonlyArray<readonly [string, ServiceReport]>, maxBytes: number): Array<string> => {
  // As JSON.stringify({ v: 1, from, s }) writes a PeerReport.
  const payloads = pack(`{"v":1,"from":${JSON.stringify(from)},"s":{`, "}}", services.map(([runId, report]) => `${JSON.stringify(runId)}:${JSON.stringify(report)}`), maxBytes)
  // An empty report still says the sender is there.
  return payloads.length > 0 ? payloads : [`{"v":1,"from":${JSON.stringify(from)},"s":{}}`]
}

/** Serializes the requests a replica let through under rate limits, in payloads of at most `maxBytes`. */
export const encodeAdmitted = (from: string, admitted: ReadonlyArray<Admitted>, maxBytes: number): Array<string> =>
  // As JSON.stringify({ v: 1, from, s: {}, rl }) writes a PeerReport.
  pack(`{"v":1,"from":${JSON.stringify(from)},"s":{},"rl":[`, "]}", admitted.map((a) => JSON.stringify(a)), maxBytes)

/** A histogram as a report carries it, kept only when it reads as one. */
const histogramOf = (value: unknown): LatencyHistogram => {
  if (!Array.isArray(value) || value.length > LATENCY_BUCKETS) return []
  const out: Array<readonly [number, number]> = []
  for (const pair of value) {
    if (!Array.isArray(pair) || !Number.isInteger(pair[0]) || pair[0] < 0 || pair[0] >= LATENCY_BUCKETS || !Number.isInteger(pair[1]) || pair[1] <= 0) return []
    out.push([pair[0], pair[1]])
  }
  return out
}

/** What this replica has heard from the others. */
export class ServicePeers {
  private readonly peers = new Map<string, Peer>()

  constructor(readonly self: string) {}

  /** Takes a message; answers the report when it came from another replica and reads as one. */
  hear(payload: string, now: number): PeerReport | undefined {
    let report: PeerReport
    try {
      report = JSON.parse(payload) as PeerReport
    } catch {
      return undefined
    }
    if (report === null || typeof report !== "object" || report.v !== 1 || typeof report.from !== "string" || report.from === this.self) return undefined
    // A replica that stops says so: it no longer counts (nor decides) from now, not 3 s later.
    if (report.bye === 1) {
      this.peers.delete(report.from)
      return report
    }
    let peer = this.peers.get(report.from)
    if (peer === undefined) this.peers.set(report.from, (peer = { heardAt: now, services: new Map() }))
    peer.heardAt = now
    for (const [runId, s] of Object.entries(report.s ?? {})) {
      if (typeof s?.p !== "string" || typeof s.n !== "string") continue
      let heard = peer.services.get(runId)
      if (heard === undefined) {
        peer.services.set(runId, (heard = { project: s.p, runName: s.n, heardAt: now, metrics: new ServiceMetrics(), demandAt: 0, drains: undefined, acks: undefined, want: undefined, deployment: undefined, totals: [0, 0], latencies: [] }))
      }
      heard.heardAt = now
      for (const [second, n] of s.c ?? []) if (Number.isFinite(second) && Number.isFinite(n)) heard.metrics.add(second, n)
      if (s.d === 1) heard.demandAt = now
      heard.drains = s.dr
      heard.acks = s.ack
      heard.want = typeof s.w === "number" ? s.w : undefined
      if (Array.isArray(s.t) && Number.isFinite(s.t[0]) && Number.isFinite(s.t[1])) heard.totals = [s.t[0], s.t[1]]
      heard.deployment = s.dep
      if (s.l !== undefined) heard.latencies = histogramOf(s.l)
    }
    // Replicas long gone are forgotten, and the services a replica no longer reports.
    for (const [id, p] of this.peers) {
      if (now - p.heardAt > 10 * PEER_LIVE_MS) this.peers.delete(id)
      else for (const [runId, s] of p.services) if (now - s.heardAt > 10 * PEER_LIVE_MS) p.services.delete(runId)
    }
    return report
  }

  private live(now: number): Array<[string, Peer]> {
    return [...this.peers].filter(([, p]) => now - p.heardAt <= PEER_LIVE_MS)
  }

  /** The replicas heard from lately, this one left out. */
  liveIds(now: number): Array<string> {
    return this.live(now).map(([id]) => id)
  }

  /** The replica that decides for every service now. */
  decider(now: number): string {
    return [this.self, ...this.liveIds(now)].sort()[0]!
  }

  decides(now: number): boolean {
    return this.decider(now) === this.self
  }

  private heard(id: string, runId: string, now: number): HeardService | undefined {
    const peer = this.peers.get(id)
    if (peer === undefined || now - peer.heardAt > PEER_LIVE_MS) return undefined
    const s = peer.services.get(runId)
    return s !== undefined && now - s.heardAt <= PEER_LIVE_MS ? s : undefined
  }

  /** The others' requests per second to a service over the window. */
  rps(runId: string, now: number, windowSeconds: number): number {
    let total = 0
    for (const [id] of this.live(now)) total += this.peers.get(id)!.services.get(runId)?.metrics.rps(now, windowSeconds) ?? 0
    return total
  }

  /** The others' requests and proxy errors to a service, each since it started. */
  totals(runId: string, now: number): readonly [number, number] {
    let requests = 0
    let errors = 0
    for (const [id] of this.live(now)) {
      const t = this.heard(id, runId, now)?.totals
      if (t !== undefined) {
        requests += t[0]
        errors += t[1]
      }
    }
    return [requests, errors]
  }

  /** The latencies the others keep for a service, one histogram each. */
  latencies(runId: string, now: number): Array<LatencyHistogram> {
    const out: Array<LatencyHistogram> = []
    for (const [id] of this.live(now)) {
      const l = this.heard(id, runId, now)?.latencies
      if (l !== undefined && l.length > 0) out.push(l)
    }
    return out
  }

  /** When another replica last said a request waits there for this service with no replica (0: never). */
  demandAt(runId: string, now: number): number {
    let at = 0
    for (const [id] of this.live(now)) at = Math.max(at, this.heard(id, runId, now)?.demandAt ?? 0)
    return at
  }

  /** The services others follow: run id → project and run name. */
  services(now: number): Map<string, { readonly project: string; readonly runName: string }> {
    const out = new Map<string, { project: string; runName: string }>()
    for (const [id, p] of this.live(now)) {
      for (const [runId, s] of p.services) if (this.heard(id, runId, now) !== undefined) out.set(runId, { project: s.project, runName: s.runName })
    }
    return out
  }

  /** The replicas the decider (another replica) drains now for a service, with when each began. */
  decidersDrains(runId: string, now: number): Readonly<Record<string, number>> {
    const decider = this.decider(now)
    if (decider === this.self) return {}
    return this.heard(decider, runId, now)?.drains ?? {}
  }

  /** What the decider (another replica) last said of a service: the count it wants and a roll under way. */
  decidersView(runId: string, now: number): { readonly want: number | undefined; readonly deployment: ServiceReport["dep"] } | undefined {
    const decider = this.decider(now)
    if (decider === this.self) return undefined
    const heard = this.heard(decider, runId, now)
    return heard === undefined ? undefined : { want: heard.want, deployment: heard.deployment }
  }

  /**
   * Whether every other replica heard from lately has said it takes no new request to a drained
   * replica and has none in flight there, for the drain that began at `startedAt`.
   */
  drainedEverywhere(runId: string, submissionId: string, startedAt: number, now: number): boolean {
    for (const id of this.liveIds(now)) {
      const ack = this.heard(id, runId, now)?.acks?.[submissionId]
      if (ack === undefined || ack[0] !== startedAt || ack[1] !== 0) return false
    }
    return true
  }
}
