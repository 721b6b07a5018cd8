import { describe, expect, it } from "vitest"
import { followLogs } from "../../src/client/LogFollow.ts"
import type { LogSource } from "../../src/client/LogFollow.ts"

const enc = new TextEncoder()
const dec = new TextDecoder()

/** A run whose log grows by one line per wait and which finishes after `total` lines. */
const growingRun = (total: number, pageSize = 2) => {
  const stored: Array<{ timestamp: Date; message: Uint8Array }> = []
  let finished = false
  let polls = 0
  const append = () => {
    if (stored.length < total) stored.push({ timestamp: new Date(1_000 * stored.length), message: enc.encode(`line ${stored.length}\n`) })
    if (stored.length === total) finished = true
  }
  const source: LogSource = {
    poll: async ({ since, cursor }) => {
      polls++
      const from = cursor !== undefined ? Number(cursor) : stored.findIndex((e) => since === undefined || e.timestamp >= since)
      const start = from < 0 ? stored.length : from
      const logs = stored.slice(start, start + pageSize)
      return { logs, cursor: String(start + logs.length), more: start + logs.length < stored.length }
    },
    isFinished: async () => finished,
    wait: async () => append()
  }
  return { source, append, stored, polls: () => polls }
}

const collect = async (it: AsyncIterable<Uint8Array>) => {
  let out = ""
  for await (const chunk of it) out += dec.decode(chunk)
  return out
}

describe("followLogs", () => {
  it("follows an active run to its end, every line once and in order", async () => {
    const run = growingRun(7)
    run.append()
    const text = await collect(followLogs(run.source))
    expect(text).toBe(Array.from({ length: 7 }, (_, i) => `line ${i}\n`).join(""))
  })
  it("returns the full log of a finished run across pages", async () => {
    const run = growingRun(5, 2)
    for (let i = 0; i < 5; i++) run.append()
    expect(await collect(followLogs(run.source))).toBe("line 0\nline 1\nline 2\nline 3\nline 4\n")
    expect(run.polls()).toBe(3)
  })
  it("stops at the log so far without follow, and honours since", async () => {
    const run = growingRun(10)
    for (let i = 0; i < 4; i++) run.append()
    expect(await collect(followLogs(run.source, { follow: false }))).toBe("line 0\nline 1\nline 2\nline 3\n")
    expect(await collect(followLogs(run.source, { follow: false, since: new Date(2_000) }))).toBe("line 2\nline 3\n")
  })
  it("stops following when aborted", async () => {
    const run = growingRun(1_000)
    const controller = new AbortController()
    let lines = 0
    for await (const _ of followLogs(run.source, { signal: controller.signal })) {
      if (++lines === 3) controller.abort()
    }
    expect(lines).toBeLessThan(6)
  })
})
