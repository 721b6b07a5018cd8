// The runner's event log: one strictly increasing clock, lossless cursors, chunk joining.
import { describe, expect, it } from "vitest"
import { JobEventLog } from "../../src/runner/JobEventLog.ts"

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
const enc = (s: string) => new TextEncoder().encode(s)

describe("JobEventLog", () => {
  it("gives every event a strictly increasing timestamp even when the clock stands still", () => {
    const log = new JobEventLog(() => 1000)
    log.addState({ state: "running" })
    log.addRunnerLog("note")
    log.addState({ state: "done", terminationReason: "done_by_runner", exitStatus: 0 })
    const all = log.since(0)
    expect(all.jobStates.map((s) => s.timestamp)).toEqual([1000, 1002])
    expect(all.runnerLogs.map((l) => [l.timestamp, text(l.message)])).toEqual([[1001, "note\n"]])
    expect(all.lastUpdated).toBe(1002)
  })

  it("joins chunks of the same millisecond into one event until a reader has seen it", () => {
    let now = 1000
    const log = new JobEventLog(() => now)
    log.addJobLog(enc("a"))
    log.addJobLog(enc("b"))
    const first = log.since(0)
    expect(first.jobLogs.map((l) => [l.timestamp, text(l.message)])).toEqual([[1000, "ab"]])
    // Seen: more output in the same millisecond is a new event after the cursor.
    log.addJobLog(enc("c"))
    const second = log.since(first.lastUpdated)
    expect(second.jobLogs.map((l) => [l.timestamp, text(l.message)])).toEqual([[1001, "c"]])
    now = 5000
    log.addJobLog(enc("d"))
    expect(log.since(second.lastUpdated).jobLogs.map((l) => [l.timestamp, text(l.message)])).toEqual([[5000, "d"]])
  })

  it("does not join output across another event", () => {
    const log = new JobEventLog(() => 1000)
    log.addJobLog(enc("a"))
    log.addState({ state: "done" })
    log.addJobLog(enc("b"))
    expect(log.since(0).jobLogs.map((l) => text(l.message))).toEqual(["a", "b"])
  })

  it("copies the bytes it is given", () => {
    const log = new JobEventLog()
    const buffer = enc("xyz")
    log.addJobLog(buffer)
    buffer[0] = 0
    expect(text(log.since(0).jobLogs[0].message)).toBe("xyz")
  })

  it("cuts a large answer with has_more, and the next pull resumes exactly where it stopped", () => {
    let now = 1
    const log = new JobEventLog(() => now++)
    for (let i = 0; i < 10; i++) log.addJobLog(enc(`${i}`.padEnd(100, ".")))
    log.addState({ state: "done" })
    const first = log.since(0, 350)
    expect(first.hasMore).toBe(true)
    expect(first.jobLogs).toHaveLength(3)
    expect(first.jobStates).toEqual([])
    const chunks = [...first.jobLogs]
    let cursor = first.lastUpdated
    let states = 0
    for (;;) {
      const next = log.since(cursor, 350)
      chunks.push(...next.jobLogs)
      states += next.jobStates.length
      cursor = next.lastUpdated
      if (!next.hasMore) break
    }
    expect(chunks.map((c) => text(c.message)[0])).toEqual(["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"])
    expect(states).toBe(1)
  })

  it("wakes a follower as soon as an event arrives, and not before", async () => {
    const log = new JobEventLog()
    let woke = false
    const waiting = log.changedAfter(log.lastUpdated).then(() => {
      woke = true
    })
    await new Promise((r) => setTimeout(r, 20))
    expect(woke).toBe(false)
    log.addJobLog(enc("x"))
    await waiting
    expect(woke).toBe(true)
  })
})
