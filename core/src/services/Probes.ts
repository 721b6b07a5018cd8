/**
 * Readiness probes of service replicas (`probes` in a service's configuration): a replica of a
 * service with probes enters the proxy's rotation only once every probe has succeeded
 * `ready_after` times in a row. Each probe is an HTTP request to the replica (its `url`,
 * `method`, `headers`, `body`) answered 2xx within `timeout`, repeated every `interval`. A probe
 * with `until_ready` stops once it passed; the others go on, and a replica whose probe fails
 * leaves the rotation until it passes `ready_after` times in a row again. Probing stops when the
 * replica leaves the service or the server closes.
 */
import type { Probe } from "../domain/Scaling.ts"
import type { Address, Replica, ServiceEntry } from "./ServiceRegistry.ts"

export class Prober {
  private readonly probing = new WeakSet<Replica>()
  private readonly timers = new Set<{ timer: ReturnType<typeof setTimeout>; resolve: () => void }>()
  private closed = false

  constructor(
    /** Where a replica's app is reached from the server. */
    private readonly address: (replica: Replica) => Promise<Address>,
    /** Called when a replica of the service became ready, or stopped being ready. */
    private readonly onReady: (entry: ServiceEntry) => void
  ) {}

  /** Starts probing the service's replicas that are not ready and not probed yet. */
  follow(entry: ServiceEntry): void {
    // An entry read for a name with no service in the store has no configuration.
    const probes = (entry.configuration as ServiceEntry["configuration"] | undefined)?.probes ?? []
    if (this.closed || probes.length === 0) return
    for (const replica of entry.replicas) {
      if (replica.ready || this.probing.has(replica)) continue
      this.probing.add(replica)
      void this.probeUntilReady(entry, replica, probes)
    }
  }

  /** Stops every probe (the server closes). */
  close(): void {
    this.closed = true
    for (const t of this.timers) {
      clearTimeout(t.timer)
      t.resolve()
    }
    this.timers.clear()
  }

  private alive(entry: ServiceEntry, replica: Replica): boolean {
    return !this.closed && !entry.finished && entry.replicas.includes(replica)
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = { timer: setTimeout(() => {
        this.timers.delete(t)
        resolve()
      }, ms), resolve }
      this.timers.add(t)
    })
  }

  private async probeUntilReady(entry: ServiceEntry, replica: Replica, probes: ReadonlyArray<Probe>): Promise<void> {
    // Each probe passes once it succeeded `ready_after` times in a row; the replica is ready
    // while all pass. A probe with `until_ready` stops there; others go on, and a failure takes
    // the replica out of rotation until that probe passes again.
    const passing = probes.map(() => false)
    const update = () => {
      const ready = passing.every(Boolean)
      if (ready === replica.ready || !this.alive(entry, replica)) return
      replica.ready = ready
      if (ready) replica.listening = true
      this.onReady(entry)
    }
    await Promise.all(probes.map(async (probe, i) => {
      let inRow = 0
      while (this.alive(entry, replica)) {
        const failure = await this.probeOnce(replica, probe)
        if (!this.alive(entry, replica)) return
        if (failure !== undefined) replica.probeError = failure
        inRow = failure === undefined ? inRow + 1 : 0
        if (failure !== undefined && passing[i]) {
          passing[i] = false
          update()
        } else if (inRow >= probe.readyAfter && !passing[i]) {
          passing[i] = true
          update()
        }
        if (replica.ready) replica.probeError = undefined
        if (passing[i] && probe.untilReady === true) return
        await this.sleep(probe.interval * 1000)
      }
    }))
  }

  /** One probe: undefined when the replica answered 2xx in time, else what went wrong. */
  private async probeOnce(replica: Replica, probe: Probe): Promise<string | undefined> {
    const what = `${probe.method.toUpperCase()} ${probe.url}`
    try {
      const { host, port } = await this.address(replica)
      const headers = new Headers()
      for (const h of probe.headers) headers.append(h.name, h.value)
      const res = await fetch(`http://${host.includes(":") ? `[${host}]` : host}:${port}${probe.url}`, {
        method: probe.method.toUpperCase(),
        headers,
        ...(probe.body !== undefined && probe.method !== "get" && probe.method !== "head" ? { body: probe.body } : {}),
        redirect: "manual",
        signal: AbortSignal.timeout(probe.timeout * 1000)
      })
      await res.arrayBuffer()
      return res.status >= 200 && res.status < 300 ? undefined : `probe ${what} answered ${res.status}`
    } catch (error) {
      // Not reachable yet, too slow, or a broken answer: a failed probe.
      const cause = error instanceof Error ? ((error.cause as Error | undefined)?.message ?? error.message) : String(error)
      return `probe ${what} failed: ${cause}`
    }
  }
}
