// A container's log followed, then read again at its end: what the followed log missed is
// delivered once, in order, and nothing it delivered is delivered twice.
import { describe, expect, it } from "vitest"
import { ContainerLog, KEPT, type LogStream } from "../src/ContainerLog.ts"

const encoder = new TextEncoder()
const entry = (ts: string, text: string) => encoder.encode(`${ts} ${text}`)
const at = (second: number, nanos: number) => `2026-12-07T06:30:${String(second).padStart(2, "0")}.${String(nanos).padStart(9, "0")}Z`

const collector = () => {
  const got: Array<string> = []
  const log = new ContainerLog((stream, bytes) => got.push(`${stream}:${new TextDecoder().decode(bytes)}`))
  return { got, log }
}

/** 3,000 entries, three a millisecond over a second, stderr every tenth. */
const entries: Array<{ stream: LogStream; ts: string; text: string }> = Array.from({ length: 3000 }, (_, i) => ({
  stream: i % 10 === 9 ? "stderr" : "stdout",
  ts: at(10 + Math.floor(i / 1000), (i % 1000) * 1_000_000 + 7),
  text: `line ${i}\n`
}))
const all = entries.map((e) => `${e.stream}:${e.text}`)

describe("ContainerLog", () => {
  it("delivers the followed entries without their timestamps, and nothing more when the second read has no news", () => {
    const { got, log } = collector()
    for (const e of entries) log.followed(e.stream, entry(e.ts, e.text))
    expect(log.since()).toBe(String(Math.floor(Date.parse("2026-12-07T06:30:12Z") / 1000) - 1))
    // The second read gives everything since that second (the daemon filters by `since`).
    for (const e of entries) log.reread(e.stream, entry(e.ts, e.text))
    expect(got).toEqual(all)
    expect(log.recovered).toBe(0)
  })

  it("delivers, in order, the last entries a followed log that ended early missed", () => {
    for (const cut of [1, 1500, 2500, 2999]) {
      const { got, log } = collector()
      for (const e of entries.slice(0, cut)) log.followed(e.stream, entry(e.ts, e.text))
      for (const e of entries) log.reread(e.stream, entry(e.ts, e.text))
      expect(got).toEqual(all)
      expect(log.recovered).toBe(3000 - cut)
    }
  })

  it("reads everything again when nothing was followed", () => {
    const { got, log } = collector()
    expect(log.since()).toBeUndefined()
    for (const e of entries) log.reread(e.stream, entry(e.ts, e.text))
    expect(got).toEqual(all)
  })

  it("finds an entry missed before a later one of the other stream that was followed", () => {
    const { got, log } = collector()
    // stderr's entry was stamped first but written after stdout's; the followed log ended between them.
    log.followed("stdout", entry(at(5, 200), "out\n"))
    log.reread("stdout", entry(at(5, 200), "out\n"))
    log.reread("stderr", entry(at(5, 100), "err\n"))
    expect(got).toEqual(["stdout:out\n", "stderr:err\n"])
  })

  it("tells apart entries of one instant by stream and length, and counts repeats", () => {
    const { got, log } = collector()
    const ts = at(3, 1)
    log.followed("stdout", entry(ts, "a\n"))
    log.followed("stdout", entry(ts, "a\n"))
    for (const [stream, text] of [["stdout", "a\n"], ["stdout", "a\n"], ["stdout", "a\n"], ["stderr", "a\n"], ["stdout", "bb\n"]] as const) {
      log.reread(stream, entry(ts, text))
    }
    expect(got).toEqual(["stdout:a\n", "stdout:a\n", "stdout:a\n", "stderr:a\n", "stdout:bb\n"])
  })

  it("keeps only the last second of followed entries", () => {
    const { got, log } = collector()
    // An entry 2 s before the newest is forgotten: the second read's copy of it is taken as delivered.
    log.followed("stdout", entry(at(1, 0), "old\n"))
    log.followed("stdout", entry(at(3, 500), "new\n"))
    log.reread("stdout", entry(at(1, 0), "old\n"))
    log.reread("stdout", entry(at(3, 500), "new\n"))
    log.reread("stdout", entry(at(3, 600), "newer\n"))
    expect(got).toEqual(["stdout:old\n", "stdout:new\n", "stdout:newer\n"])
    const kept = log as unknown as { recent: Array<unknown>; head: number }
    expect(kept.recent.length - kept.head).toBe(1)
  })

  it("keeps at most KEPT followed entries, and the second read skips what came before those", () => {
    const { got, log } = collector()
    const many = Array.from({ length: KEPT + 500 }, (_, i) => ({ ts: at(20, i * 1000), text: `n${i}\n` }))
    for (const e of many) log.followed("stdout", entry(e.ts, e.text))
    const kept = log as unknown as { recent: Array<unknown>; head: number }
    expect(kept.recent.length - kept.head).toBe(KEPT)
    // Everything again, and one more: only the new one is delivered (none twice).
    for (const e of many) log.reread("stdout", entry(e.ts, e.text))
    log.reread("stdout", entry(at(21, 0), "new\n"))
    expect(got).toEqual([...many.map((e) => `stdout:${e.text}`), "stdout:new\n"])
  })

  it("reads timestamps in another zone or with fewer digits as the same instants", () => {
    const { got, log } = collector()
    log.followed("stdout", entry("2026-12-07T07:30:05.5+01:00", "x\n"))
    log.reread("stdout", entry("2026-12-07T06:30:05.500000000Z", "x\n"))
    log.reread("stdout", entry("2026-12-07T06:30:05.600000000Z", "y\n"))
    expect(got).toEqual(["stdout:x\n", "stdout:y\n"])
  })

  it("passes on a followed entry without a timestamp as it is", () => {
    const { got, log } = collector()
    log.followed("stdout", encoder.encode("no timestamp here\n"))
    expect(got).toEqual(["stdout:no timestamp here\n"])
    expect(log.since()).toBeUndefined()
  })
})
