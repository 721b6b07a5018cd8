// File-backed job logs of the embedded store: out-of-order timestamps, a torn tail after a
// crash, index eviction, records it does not know, and 50 MB through append and poll.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { StateStore } from "@dstack-ts/core"
import { FileLogs } from "../src/index.ts"
import { LogFrames } from "@dstack-ts/core"

const { encodeLogFrames } = LogFrames

const root = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-filelogs-"))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
let n = 0
const freshDir = () => path.join(root, `d${n++}`)

const text = (s: string) => new TextEncoder().encode(s)
const read = (e: StateStore.LogEvent) => new TextDecoder().decode(e.message)
const ev = (ts: number, m: string, source: StateStore.LogSource = "stdout"): StateStore.NewLogEvent => ({
  project: "p",
  jobSubmissionId: "s",
  timestamp: new Date(ts),
  source,
  message: text(m)
})

const pollAll = (logs: StateStore.Logs, q: Partial<StateStore.LogQuery> = {}) =>
  Effect.gen(function* () {
    const out: Array<string> = []
    let nextToken: string | undefined
    do {
      const page = yield* logs.poll({ project: "p", jobSubmissionId: "s", limit: 2, ...q, ...(nextToken === undefined ? {} : { nextToken }) })
      out.push(...page.events.map(read))
      nextToken = page.nextToken
    } while (nextToken !== undefined)
    return out
  })

it.effect("orders late events by timestamp, ties by arrival, in both directions and after reopening", () =>
  Effect.gen(function* () {
    const dir = freshDir()
    const logs = FileLogs.make({ dir })
    yield* logs.append([ev(10, "a"), ev(20, "c"), ev(30, "e")])
    yield* logs.append([ev(15, "b"), ev(20, "d"), ev(5, "first")])
    const expected = ["first", "a", "b", "c", "d", "e"]
    expect(yield* pollAll(logs)).toEqual(expected)
    expect(yield* pollAll(logs, { descending: true })).toEqual([...expected].reverse())
    expect(yield* pollAll(logs, { startTime: new Date(15), endTime: new Date(30) })).toEqual(["b", "c", "d"])
    // A second instance reads the files afresh.
    expect(yield* pollAll(FileLogs.make({ dir }))).toEqual(expected)
  }))

it.effect("cuts off a torn record at the tail and keeps appending after it", () =>
  Effect.gen(function* () {
    const dir = freshDir()
    const logs = FileLogs.make({ dir })
    yield* logs.append([ev(1, "one"), ev(2, "two")])
    const file = path.join(dir, "p", "s.log")
    // A header that promises more bytes than follow: a write cut short.
    const torn = Buffer.alloc(20)
    torn.writeUInt32LE(1000, 4)
    fs.appendFileSync(file, torn)
    const reopened = FileLogs.make({ dir })
    expect(yield* pollAll(reopened)).toEqual(["one", "two"])
    yield* reopened.append([ev(3, "three")])
    expect(yield* pollAll(FileLogs.make({ dir }))).toEqual(["one", "two", "three"])
  }))

it.effect("refuses a whole record of a source it never writes, naming the file and byte, and keeps the file", () =>
  Effect.gen(function* () {
    const dir = freshDir()
    const logs = FileLogs.make({ dir })
    yield* logs.append([ev(1, "one")])
    const file = path.join(dir, "p", "s.log")
    const record = Buffer.alloc(16 + 3)
    record.writeUInt8(9, 0) // no such source
    record.writeUInt32LE(3, 4)
    record.writeDoubleLE(2, 8)
    record.write("bad", 16)
    fs.appendFileSync(file, record)
    const sizeBefore = fs.statSync(file).size
    const error = yield* Effect.flip(pollAll(FileLogs.make({ dir })))
    expect(error.reason).toBe("Invalid")
    expect(error.message).toContain("unknown source 9")
    expect(error.message).toContain(file)
    expect(fs.statSync(file).size).toBe(sizeBefore)
  }))

it.effect("announces appends per job submission and keeps runner events apart", () =>
  Effect.gen(function* () {
    const seen: Array<StateStore.Change> = []
    const logs = FileLogs.make({ dir: freshDir(), announce: (c) => seen.push(c), maxOpenStreams: 1 })
    yield* logs.append([ev(1, "out"), ev(2, "diag", "runner"), { ...ev(3, "other"), jobSubmissionId: "../../etc" }])
    expect(seen).toEqual([
      { kind: "log", id: "s", project: "p" },
      { kind: "log", id: "../../etc", project: "p" }
    ])
    // Evicted indexes are rebuilt from the files.
    expect(yield* pollAll(logs)).toEqual(["out"])
    expect(yield* pollAll(logs, { diagnose: true })).toEqual(["diag"])
    expect(yield* pollAll(logs, { jobSubmissionId: "../../etc" })).toEqual(["other"])
    yield* logs.delete("p", ["s"])
    expect(yield* pollAll(logs)).toEqual([])
    expect((yield* Effect.either(logs.poll({ project: "p", jobSubmissionId: "s", nextToken: "x" })))._tag).toBe("Left")
  }))

it.effect("appends and reads 50 MB in 50 pages (in-order appends; late ones still come back right)", () =>
  Effect.gen(function* () {
    const logs = FileLogs.make({ dir: freshDir() })
    const message = new Uint8Array(1024).fill(97)
    const t0 = performance.now()
    for (let k = 0; k < 50; k++) yield* logs.append(Array.from({ length: 1000 }, (_, i) => ({ ...ev(k * 1000 + i, ""), message })))
    const writeMBs = (50 * 1000 * 1024) / 1e6 / ((performance.now() - t0) / 1000)
    const t1 = performance.now()
    let pages = 0
    let nextToken: string | undefined
    do {
      const page = yield* logs.poll({ project: "p", jobSubmissionId: "s", ...(nextToken === undefined ? {} : { nextToken }) })
      nextToken = page.nextToken
      pages++
    } while (nextToken !== undefined)
    const readMBs = (50 * 1000 * 1024) / 1e6 / ((performance.now() - t1) / 1000)
    console.log(`FileLogs: append ${writeMBs.toFixed(0)} MB/s, poll ${readMBs.toFixed(0)} MB/s`)
    expect(pages).toBe(50)
    // Late events scattered through a big file: pages come back in order, with the right bytes.
    const late = FileLogs.make({ dir: freshDir() })
    for (let k = 0; k < 5; k++) {
      yield* late.append(Array.from({ length: 200 }, (_, i) => ev(i * 5 + k, `${i * 5 + k}`)))
    }
    const all = yield* pollAll(late, { limit: 1000 })
    expect(all).toEqual(Array.from({ length: 1000 }, (_, t) => `${t}`))
    // Speed is printed, not asserted: `npm run bench` measures it beside a baseline.
  }), 60_000)

it.effect("reads a page with every message right behind its stored header: the binary stream's frames as they lie", () =>
  Effect.gen(function* () {
    const logs = FileLogs.make({ dir: freshDir() })
    yield* logs.append([ev(10, "out 1\n"), ev(11, "err\n", "stderr"), ev(12, "")])
    yield* logs.append([ev(13, "diag", "runner"), ev(14, "out é\n")])
    // A late event: the page reads two runs of adjacent records.
    yield* logs.append([ev(5, "late\n")])
    for (const q of [{}, { nextToken: "10_0" }, { limit: 2 }]) {
      const page = yield* logs.poll({ project: "p", jobSubmissionId: "s", ...q })
      expect(page.events.length).toBeGreaterThan(0)
      for (const e of page.events) {
        const m = e.message
        expect(m.byteOffset).toBeGreaterThanOrEqual(16)
        const stored = new Uint8Array(m.buffer, m.byteOffset - 16, 16 + m.byteLength)
        expect(Buffer.from(stored).equals(Buffer.from(encodeLogFrames([{ kind: e.source, timestamp: e.timestamp.getTime(), payload: m }])))).toBe(true)
      }
    }
  }))
