// A small closed-loop load generator over node:http with keep-alive: `concurrency` workers,
// each sending its next request when the previous answer is fully read, for a bounded time
// and a bounded number of requests. Answers requests/s and per-request latencies (ms).
import * as http from "node:http"
import { now } from "./stats.ts"

export interface Target {
  readonly url: string
  readonly path: string
  readonly body: string
  readonly token?: string
  /** The body of the i-th request, when they differ (else `body` every time). */
  readonly bodyAt?: (i: number) => string
}

export interface LoadResult {
  readonly requests: number
  /** Requests sent in the warm-up before the measured ones. */
  readonly warmupRequests: number
  readonly errors: number
  readonly seconds: number
  readonly rps: number
  readonly latencies: ReadonlyArray<number>
}

/** One POST on an agent; resolves with the status and the body's length once fully read. */
let sentBodies = 0

export const post = (agent: http.Agent, target: Target): Promise<{ status: number; bytes: number }> =>
  new Promise((resolve, reject) => {
    const u = new URL(target.url)
    const body = Buffer.from(target.bodyAt ? target.bodyAt(sentBodies++) : target.body)
    const req = http.request(
      {
        agent,
        host: u.hostname,
        port: u.port,
        path: target.path,
        method: "POST",
        headers: {
          "content-type": "application/json",
          "content-length": body.length,
          ...(target.token ? { authorization: `Bearer ${target.token}` } : {})
        }
      },
      (res) => {
        let bytes = 0
        res.on("data", (d: Buffer) => {
          bytes += d.length
        })
        res.on("end", () => resolve({ status: res.statusCode ?? 0, bytes }))
        res.on("error", reject)
      }
    )
    req.on("error", reject)
    req.end(body)
  })

export const load = async (target: Target, options: { concurrency: number; durationMs: number; maxRequests: number; warmupMs?: number }): Promise<LoadResult> => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.concurrency })
  try {
    // warm-up: connections open, JIT warm
    const warmEnd = now() + (options.warmupMs ?? 300)
    let warmupRequests = 0
    await Promise.all(Array.from({ length: options.concurrency }, async () => {
      while (now() < warmEnd) {
        warmupRequests++
        await post(agent, target)
      }
    }))
    const latencies: Array<number> = []
    let errors = 0
    let sent = 0
    const start = now()
    const end = start + options.durationMs
    await Promise.all(Array.from({ length: options.concurrency }, async () => {
      while (now() < end && sent < options.maxRequests) {
        sent++
        const t0 = now()
        const res = await post(agent, target).catch(() => ({ status: 0, bytes: 0 }))
        if (res.status !== 200) errors++
        latencies.push(now() - t0)
      }
    }))
    const seconds = (now() - start) / 1000
    return { requests: latencies.length, warmupRequests, errors, seconds, rps: latencies.length / seconds, latencies }
  } finally {
    agent.destroy()
  }
}
