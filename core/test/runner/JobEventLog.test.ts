// The runner's event log: one strictly increasing clock, lossless cursors, chunk joining,
// output bounded in memory (spilled to files, bounded on disk).
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { FrameDecoder, type StreamEvent, type StreamFrame } from "../../src/runner/EventStream.ts"
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

describe("JobEventLog bounded", () => {
  const spillDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "dstack-eventlog-"))
  const lines = (n: number) => Array.from({ length: n }, (_, i) => `${String(i).padStart(5, "0")}`.padEnd(99, ".") + "\n")

  /** Reads everything after `from` in steps of at most `step` bytes, as pulls and as frames. */
  const readAll = (log: JobEventLog, from: number, step: number) => {
    let cursor = from
    const pulled: Array<StreamEvent> = []
    for (;;) {
      const next = log.read(cursor, step)
      pulled.push(...next.events)
      cursor = next.lastUpdated
      if (!next.hasMore) break
    }
    cursor = from
    const framed: Array<StreamFrame> = []
    const decoder = new FrameDecoder()
    for (;;) {
      const next = log.readFrames(cursor, step)
      framed.push(...decoder.push(next.frames))
      cursor = next.lastUpdated
      if (!next.hasMore) break
    }
    return { pulled, framed }
  }
  const texts = (events: ReadonlyArray<StreamFrame>) =>
    events.map((e) => (e.kind === "state" ? `<${e.state.state}>` : e.kind === "end" || e.kind === "heartbeat" ? `<${e.kind}>` : text(e.message)))

  it("keeps at most its memory budget and spills older output to files, losing nothing for a reader", () => {
    let now = 1
    const dir = spillDir()
    const log = new JobEventLog({ now: () => now++, memoryBytes: 1000, spillDir: dir, segmentBytes: 2500 })
    log.addState({ state: "running" })
    const written = lines(100)
    written.forEach((line, i) => {
      log.addJobLog(enc(line))
      if (i === 50) log.addState({ state: "pulling" })
    })
    log.addState({ state: "done" })
    expect(log.footprint.memoryBytes).toBeLessThanOrEqual(1000)
    expect(log.footprint.spilledBytes).toBeGreaterThan(8000)
    expect(fs.readdirSync(dir).length).toBeGreaterThan(1)
    const expected = ["<running>", ...written.slice(0, 51), "<pulling>", ...written.slice(51), "<done>"]
    for (const step of [1, 250, 1_000_000]) {
      const { pulled, framed } = readAll(log, 0, step)
      expect(texts(pulled)).toEqual(expected)
      expect(texts(framed)).toEqual(expected)
    }
    // From a cursor in the middle of the spilled part: exactly what came after it.
    const cursor = log.read(0, 3000).lastUpdated
    const rest = readAll(log, cursor, 700)
    expect(texts(rest.framed)).toEqual(expected.slice(expected.length - rest.framed.length))
    expect(rest.framed[0].timestamp).toBeGreaterThan(cursor)
    log.close()
    expect(fs.readdirSync(dir)).toEqual([])
  })

  it("drops the oldest spill file past its disk budget and tells a reader that comes from before it", () => {
    let now = 1
    const log = new JobEventLog({ now: () => now++, memoryBytes: 1000, spillDir: spillDir(), segmentBytes: 2000, maxSpillBytes: 5000 })
    const written = lines(200)
    for (const line of written) log.addJobLog(enc(line))
    const { droppedBytes, spilledBytes } = log.footprint
    expect(droppedBytes).toBeGreaterThan(0)
    expect(spilledBytes).toBeLessThanOrEqual(5000 + 2100)
    const { pulled, framed } = readAll(log, 0, 1500)
    for (const got of [pulled, framed]) {
      expect(got[0].kind).toBe("runner_log")
      expect(texts(got)[0]).toContain(`dropped ${droppedBytes} bytes`)
      const kept = texts(got.slice(1))
      // The rest is the newest lines, contiguous and in order.
      expect(kept).toEqual(written.slice(written.length - kept.length))
      expect(kept.length * 100).toBeGreaterThanOrEqual(200 * 100 - droppedBytes)
    }
    // A reader that kept up hears nothing about it.
    const recent = log.read(log.lastUpdated - 3, 1_000_000)
    expect(recent.events.every((e) => e.kind === "log")).toBe(true)
    log.close()
  })

  it("without a spill directory drops what does not fit in memory, and says so", () => {
    let now = 1
    const log = new JobEventLog({ now: () => now++, memoryBytes: 500 })
    for (const line of lines(20)) log.addJobLog(enc(line))
    expect(log.footprint.memoryBytes).toBeLessThanOrEqual(500)
    const got = log.read(0, 1_000_000)
    expect(got.events[0].kind).toBe("runner_log")
    expect(texts(got.events).slice(1).length).toBeLessThanOrEqual(5)
  })

  it("a new job clears spilled output too, and the clock keeps running", () => {
    let now = 1
    const dir = spillDir()
    const log = new JobEventLog({ now: () => now++, memoryBytes: 300, spillDir: dir })
    for (const line of lines(10)) log.addJobLog(enc(line))
    const before = log.lastUpdated
    log.clear()
    expect(fs.readdirSync(dir)).toEqual([])
    log.addJobLog(enc("next\n"))
    expect(texts(log.read(before, 1000).events)).toEqual(["next\n"])
  })

  it("lets go of the spill files the server acknowledged, keeps what is in memory, and hands a reader what is left, without a note", () => {
    let now = 1
    const dir = spillDir()
    const log = new JobEventLog({ now: () => now++, memoryBytes: 1000, spillDir: dir, segmentBytes: 2000 })
    log.addState({ state: "running" })
    const written = lines(200)
    for (const line of written) log.addJobLog(enc(line))
    const spilledFiles = fs.readdirSync(dir).length
    expect(spilledFiles).toBeGreaterThan(2)
    // The server has stored about half: whole spill files before it go.
    const all = readAll(log, 0, 1_000_000).pulled
    const half = all[Math.floor(all.length / 2)].timestamp
    const freed = log.acknowledge(half)
    expect(freed).toBeGreaterThan(0)
    expect(fs.readdirSync(dir).length).toBeLessThan(spilledFiles)
    // What comes after the acknowledged point is all there, from the server's cursor or from 0.
    const after = all.filter((e) => e.timestamp > half)
    expect(texts(readAll(log, half, 700).framed)).toEqual(texts(after))
    const from0 = readAll(log, 0, 700).pulled
    expect(from0.some((e) => e.kind === "runner_log")).toBe(false)
    expect(texts(from0.filter((e) => e.kind !== "state")).slice(-after.length)).toEqual(texts(after))
    expect(from0.find((e) => e.kind === "state")).toBeDefined()
    // Everything stored: no spill file is left; the newest output stays in memory.
    const inMemory = log.footprint.memoryBytes
    log.acknowledge(log.lastUpdated)
    expect(log.footprint).toEqual({ memoryBytes: inMemory, spilledBytes: 0, droppedBytes: 0 })
    expect(inMemory).toBeGreaterThan(0)
    expect(fs.readdirSync(dir)).toEqual([])
    expect(texts(readAll(log, 0, 1_000_000).pulled.filter((e) => e.kind === "log")).join("")).toBe(written.join("").slice(-inMemory))
    const cursor = log.lastUpdated
    log.addJobLog(enc("more\n"))
    expect(texts(log.read(cursor).events)).toEqual(["more\n"])
    // An acknowledgment from before the log's clock (another job's) takes nothing.
    expect(log.acknowledge(1)).toBe(0)
    expect(texts(log.read(cursor).events)).toEqual(["more\n"])
    log.close()
  })
})
