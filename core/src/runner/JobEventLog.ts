/**
 * The runner's memory of one job: state events, job output and runner messages, on one
 * strictly increasing millisecond clock, so that "everything after timestamp T" is a lossless
 * cursor for pulls and live followers alike.
 *
 * Output is bounded in memory: past `memoryBytes` the oldest events move to spill files under
 * `spillDir` (read back when a follower asks for them), and past `maxSpillBytes` on disk the
 * oldest spill file goes — a follower that comes back from before it is told how much it lost.
 * Without a `spillDir` the oldest events past `memoryBytes` are dropped the same way.
 *
 * Spilled output the server has acknowledged (`acknowledge`: it has stored everything up to a
 * timestamp) leaves the disk at once, so that a job followed by its server keeps on disk only
 * what the server has not stored yet, however long it runs and however much it writes. Output
 * in memory (bounded anyway) stays, for readers of the runner's own `logs_ws` (`dstack attach`)
 * that come from the job's start.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { encodeFrames, type StreamEvent } from "./EventStream.ts"
import type { JobStateEvent, LogEvent } from "./RunnerProtocol.ts"
import { RECORD_HEADER, recordKind, recordLength, recordTimestamp, writeRecordHeader } from "../api/RecordHeader.ts"

type LogKind = "log" | "runner_log"

interface PendingLog {
  timestamp: number
  kind: LogKind
  chunks: Array<Uint8Array>
  size: number
}

/** A spill file: records of a 16-byte header (u8 kind, u8 0, u16 0, u32 length, f64 ts) and the bytes. */
interface Segment {
  readonly file: string
  readonly fd: number
  size: number
  firstTs: number
  lastTs: number
  /** Every ~SPARSE bytes: the timestamp and offset of a record, to start a scan near a cursor. */
  readonly marks: Array<{ readonly ts: number; readonly offset: number }>
}

/** The largest log event built by joining chunks that arrive within the same millisecond. */
const MAX_EVENT_BYTES = 1024 * 1024
const HEADER = RECORD_HEADER
const SPARSE = 256 * 1024

export interface JobEventLogOptions {
  /** The clock (epoch ms); default `Date.now`. */
  readonly now?: () => number
  /** Output kept in memory, in bytes (default 32 MiB); older output is spilled or dropped. */
  readonly memoryBytes?: number
  /** Where older output is spilled (created if missing); none: it is dropped. */
  readonly spillDir?: string
  /** Spilled output kept on disk, in bytes (default 2 GiB); the oldest spill file goes first. */
  readonly maxSpillBytes?: number
  /** The size of one spill file (default 64 MiB). */
  readonly segmentBytes?: number
}

const joinChunks = (chunks: ReadonlyArray<Uint8Array>, size: number): Uint8Array => {
  if (chunks.length === 1) return chunks[0]
  const out = new Uint8Array(size)
  let offset = 0
  for (const chunk of chunks) {
    out.set(chunk, offset)
    offset += chunk.length
  }
  return out
}

/** Index of the first event with a timestamp after `after` (events are sorted). */
const firstAfter = (events: ReadonlyArray<{ timestamp: number }>, after: number): number => {
  let lo = 0
  let hi = events.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (events[mid].timestamp <= after) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** What a reader gets: the events after its cursor, and the cursor for its next read. */
export interface JobEventsSince {
  readonly jobStates: ReadonlyArray<JobStateEvent>
  readonly jobLogs: ReadonlyArray<LogEvent>
  readonly runnerLogs: ReadonlyArray<LogEvent>
  readonly lastUpdated: number
  readonly hasMore: boolean
}

/** The events after a cursor in the order they happened (states and output interleaved). */
export interface JobEventsRead {
  readonly events: ReadonlyArray<StreamEvent>
  readonly lastUpdated: number
  readonly hasMore: boolean
}

export class JobEventLog {
  private readonly states: Array<JobStateEvent> = []
  /** Output still in memory, oldest first; older output is in `segments`. */
  private readonly logs: Array<PendingLog> = []
  private memBytes = 0
  private readonly segments: Array<Segment> = []
  private segmentSeq = 0
  /** Output dropped for good: its newest timestamp and its size. */
  private droppedUpTo = 0
  private droppedBytes = 0
  private last = 0
  /** No event at or before this timestamp may change any more: a reader has seen it. */
  private sealedUpTo = 0
  private readonly listeners = new Set<() => void>()
  private readonly now: () => number
  private readonly memoryBytes: number
  private readonly maxSpillBytes: number
  private readonly segmentBytes: number
  private readonly spillDir: string | undefined

  constructor(options: JobEventLogOptions | (() => number) = {}) {
    const o: JobEventLogOptions = typeof options === "function" ? { now: options } : options
    this.now = o.now ?? Date.now
    this.memoryBytes = o.memoryBytes ?? 32 * 1024 * 1024
    this.maxSpillBytes = o.maxSpillBytes ?? 2 * 1024 * 1024 * 1024
    this.segmentBytes = o.segmentBytes ?? 64 * 1024 * 1024
    this.spillDir = o.spillDir
  }

  /** The newest timestamp in the log (0 when empty). */
  get lastUpdated(): number {
    return this.last
  }

  /** Output bytes held in memory and in spill files (for tests and metrics). */
  get footprint(): { readonly memoryBytes: number; readonly spilledBytes: number; readonly droppedBytes: number } {
    return { memoryBytes: this.memBytes, spilledBytes: this.segments.reduce((n, s) => n + s.size, 0), droppedBytes: this.droppedBytes }
  }

  private tick(): number {
    this.last = Math.max(this.now(), this.last + 1)
    return this.last
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener()
  }

  addState(event: Omit<JobStateEvent, "timestamp">): JobStateEvent {
    const full = { ...event, timestamp: this.tick() } as JobStateEvent
    this.states.push(full)
    this.notify()
    return full
  }

  addJobLog(bytes: Uint8Array): void {
    this.addLog("log", bytes)
  }

  addRunnerLog(message: string): void {
    this.addLog("runner_log", new TextEncoder().encode(message.endsWith("\n") ? message : `${message}\n`))
  }

  private addLog(kind: LogKind, bytes: Uint8Array): void {
    if (bytes.length === 0) return
    // Copy: a reader may hold the event while the producer reuses its buffer.
    const chunk = new Uint8Array(bytes)
    const tail = this.logs[this.logs.length - 1]
    // Chunks that arrive within one millisecond join the newest event, as long as no reader
    // has seen it and nothing else came after it: timestamps stay close to the wall clock
    // under heavy output without a cursor ever skipping bytes.
    if (
      tail !== undefined &&
      tail.kind === kind &&
      tail.timestamp === this.last &&
      tail.timestamp > this.sealedUpTo &&
      tail.timestamp >= this.now() &&
      tail.size + chunk.length <= MAX_EVENT_BYTES
    ) {
      tail.chunks.push(chunk)
      tail.size += chunk.length
    } else {
      this.logs.push({ timestamp: this.tick(), kind, chunks: [chunk], size: chunk.length })
    }
    this.memBytes += chunk.length
    if (this.memBytes > this.memoryBytes) this.evict()
    this.notify()
  }

  // Moves the oldest output out of memory (down to half the budget, so that spills come in
  // big writes), always keeping the newest event, which may still grow.
  private evict(): void {
    let n = 0
    let freed = 0
    while (n < this.logs.length - 1 && this.memBytes - freed > this.memoryBytes / 2) freed += this.logs[n++].size
    if (n === 0) return
    const moved = this.logs.splice(0, n)
    this.memBytes -= freed
    if (this.spillDir === undefined) {
      this.droppedBytes += freed
      this.droppedUpTo = moved[moved.length - 1].timestamp
      return
    }
    this.spill(moved)
  }

  private spill(moved: ReadonlyArray<PendingLog>): void {
    let segment = this.segments[this.segments.length - 1]
    if (segment === undefined || segment.size >= this.segmentBytes) segment = this.openSegment()
    let total = 0
    for (const e of moved) total += HEADER + e.size
    const out = new Uint8Array(total)
    const view = new DataView(out.buffer)
    let pos = 0
    for (const e of moved) {
      const at = segment.size + pos
      if (segment.marks.length === 0 || at - segment.marks[segment.marks.length - 1].offset >= SPARSE) {
        segment.marks.push({ ts: e.timestamp, offset: at })
      }
      writeRecordHeader(view, pos, e.kind === "log" ? 2 : 3, e.size, e.timestamp)
      let offset = pos + HEADER
      for (const chunk of e.chunks) {
        out.set(chunk, offset)
        offset += chunk.length
      }
      pos += HEADER + e.size
    }
    let written = 0
    while (written < out.length) written += fs.writeSync(segment.fd, out, written, out.length - written, segment.size + written)
    if (segment.size === 0) segment.firstTs = moved[0].timestamp
    segment.size += total
    segment.lastTs = moved[moved.length - 1].timestamp
    let onDisk = this.segments.reduce((s, g) => s + g.size, 0)
    while (onDisk > this.maxSpillBytes && this.segments.length > 1) {
      const oldest = this.segments.shift()!
      onDisk -= oldest.size
      this.droppedBytes += oldest.size
      this.droppedUpTo = oldest.lastTs
      this.closeSegment(oldest)
    }
  }

  private openSegment(): Segment {
    fs.mkdirSync(this.spillDir!, { recursive: true })
    const file = path.join(this.spillDir!, `output-${process.pid}-${++this.segmentSeq}.spill`)
    const fd = fs.openSync(file, "w+")
    const segment: Segment = { file, fd, size: 0, firstTs: 0, lastTs: 0, marks: [] }
    this.segments.push(segment)
    return segment
  }

  private closeSegment(segment: Segment): void {
    try {
      fs.closeSync(segment.fd)
    } catch {
      // already closed
    }
    fs.rmSync(segment.file, { force: true })
  }

  /**
   * Appends the spilled records after `after` of one segment to `out` while the output stays
   * within `max` bytes (`used` already taken; at least one record overall). Returns the bytes
   * read, or -1 when it stopped at the limit.
   */
  private readSegment(segment: Segment, after: number, used: number, max: number, out: Array<StreamEvent>): number {
    const block = this.readSegmentBlock(segment, after, used, max)
    const view = new DataView(block.bytes.buffer, block.bytes.byteOffset, block.bytes.byteLength)
    for (let pos = 0; pos < block.bytes.byteLength;) {
      const length = recordLength(view, pos)
      const message = block.bytes.subarray(pos + HEADER, pos + HEADER + length)
      out.push({ kind: recordKind(view, pos) === 2 ? "log" : "runner_log", timestamp: recordTimestamp(view, pos), message })
      pos += HEADER + length
    }
    return block.cut ? -1 : block.payload
  }

  /**
   * Forgets every event (a new job starts on this runner) while the clock keeps running, so
   * a cursor from before the reset can never see the new job's events as old ones.
   */
  clear(): void {
    this.states.length = 0
    this.logs.length = 0
    this.memBytes = 0
    for (const segment of this.segments.splice(0)) this.closeSegment(segment)
    this.droppedBytes = 0
    this.droppedUpTo = 0
    this.sealedUpTo = this.last
    this.notify()
  }

  /**
   * The server has stored every event up to `upTo`: spill files that hold nothing newer are
   * removed. A reader that comes from before them afterwards gets what is left, without a note:
   * nothing was lost, the server has it. Output in memory and states stay. Answers the bytes freed.
   */
  acknowledge(upTo: number): number {
    if (!(upTo > 0)) return 0
    let freed = 0
    while (this.segments.length > 0 && this.segments[0].lastTs <= upTo && this.segments[0].size > 0) {
      const segment = this.segments.shift()!
      freed += segment.size
      this.closeSegment(segment)
    }
    // Whoever acknowledged has seen these events: they may not change any more.
    this.sealedUpTo = Math.max(this.sealedUpTo, Math.min(upTo, this.last))
    return freed
  }

  /** Removes the spill files (the runner is going away). */
  close(): void {
    for (const segment of this.segments.splice(0)) this.closeSegment(segment)
  }

  /**
   * Events after `after` in the order they happened, at most about `maxLogBytes` of output
   * (at least one event). When cut, the cursor is the newest timestamp handed out and
   * `hasMore` is set.
   */
  read(after: number, maxLogBytes = 4 * 1024 * 1024): JobEventsRead {
    const logs: Array<StreamEvent> = []
    let bytes = 0
    let cut = false
    if (after < this.droppedUpTo) {
      // The follower comes back from before output that is gone: say so, in its place.
      logs.push({ kind: "runner_log", timestamp: this.droppedUpTo, message: new TextEncoder().encode(this.droppedNote()) })
      after = this.droppedUpTo
    }
    const firstInMemory = this.logs[0]?.timestamp ?? Infinity
    if (after < firstInMemory) {
      for (const segment of this.segments) {
        if (segment.lastTs <= after) continue
        const got = this.readSegment(segment, after, bytes, maxLogBytes, logs)
        if (got < 0) {
          cut = true
          break
        }
        bytes += got
      }
    }
    if (!cut) {
      for (let i = firstAfter(this.logs, after); i < this.logs.length; i++) {
        const event = this.logs[i]
        if (bytes > 0 && bytes + event.size > maxLogBytes) {
          cut = true
          break
        }
        bytes += event.size
        logs.push({ kind: event.kind, timestamp: event.timestamp, message: joinChunks(event.chunks, event.size) })
      }
    }
    const cutoff = cut ? logs[logs.length - 1].timestamp : this.last
    const events: Array<StreamEvent> = []
    // Merge the (few) states into the output by timestamp.
    let s = firstAfter(this.states, after)
    for (const log of logs) {
      while (s < this.states.length && this.states[s].timestamp < log.timestamp) {
        events.push({ kind: "state", timestamp: this.states[s].timestamp, state: this.states[s] })
        s++
      }
      events.push(log)
    }
    for (; s < this.states.length && this.states[s].timestamp <= cutoff; s++) {
      events.push({ kind: "state", timestamp: this.states[s].timestamp, state: this.states[s] })
    }
    this.sealedUpTo = Math.max(this.sealedUpTo, cutoff)
    return { events, lastUpdated: Math.max(after, cutoff), hasMore: cut }
  }

  /**
   * The same events as `read`, already framed for the binary event stream (EventStream.ts):
   * spilled output is copied from its file as it lies (the spill records are frames), output
   * in memory is framed straight from its chunks.
   */
  readFrames(after: number, maxLogBytes = 1024 * 1024): { readonly frames: Uint8Array; readonly lastUpdated: number; readonly hasMore: boolean } {
    const pieces: Array<Uint8Array | PendingLog> = []
    let total = 0
    let bytes = 0
    let cut = false
    let s = firstAfter(this.states, after)
    const statesBefore = (ts: number) => {
      for (; s < this.states.length && this.states[s].timestamp < ts; s++) {
        const frame = encodeFrames([{ kind: "state", timestamp: this.states[s].timestamp, state: this.states[s] }])
        pieces.push(frame)
        total += frame.byteLength
      }
    }
    let newest = after
    if (after < this.droppedUpTo) {
      statesBefore(this.droppedUpTo)
      const frame = encodeFrames([{ kind: "runner_log", timestamp: this.droppedUpTo, message: new TextEncoder().encode(this.droppedNote()) }])
      pieces.push(frame)
      total += frame.byteLength
      after = newest = this.droppedUpTo
    }
    if (after < (this.logs[0]?.timestamp ?? Infinity)) {
      for (const segment of this.segments) {
        if (segment.lastTs <= after) continue
        const block = this.readSegmentBlock(segment, after, bytes, maxLogBytes)
        // Split the block where a state belongs between its records.
        let from = 0
        let pos = 0
        const view = new DataView(block.bytes.buffer, block.bytes.byteOffset, block.bytes.byteLength)
        while (pos < block.bytes.byteLength) {
          const ts = recordTimestamp(view, pos)
          if (s < this.states.length && this.states[s].timestamp < ts) {
            if (pos > from) {
              pieces.push(block.bytes.subarray(from, pos))
              total += pos - from
            }
            from = pos
            statesBefore(ts)
          }
          newest = ts
          pos += HEADER + recordLength(view, pos)
        }
        if (pos > from) {
          pieces.push(block.bytes.subarray(from, pos))
          total += pos - from
        }
        bytes += block.payload
        if (block.cut) {
          cut = true
          break
        }
      }
    }
    if (!cut) {
      for (let i = firstAfter(this.logs, after); i < this.logs.length; i++) {
        const event = this.logs[i]
        if (bytes > 0 && bytes + event.size > maxLogBytes) {
          cut = true
          break
        }
        statesBefore(event.timestamp)
        bytes += event.size
        pieces.push(event)
        total += HEADER + event.size
        newest = event.timestamp
      }
    }
    const cutoff = cut ? newest : this.last
    statesBefore(cutoff + 1)
    const out = new Uint8Array(total)
    const view = new DataView(out.buffer)
    let pos = 0
    for (const piece of pieces) {
      if (piece instanceof Uint8Array) {
        out.set(piece, pos)
        pos += piece.byteLength
        continue
      }
      writeRecordHeader(view, pos, piece.kind === "log" ? 2 : 3, piece.size, piece.timestamp)
      pos += HEADER
      for (const chunk of piece.chunks) {
        out.set(chunk, pos)
        pos += chunk.byteLength
      }
    }
    this.sealedUpTo = Math.max(this.sealedUpTo, cutoff)
    return { frames: out, lastUpdated: Math.max(after, cutoff), hasMore: cut }
  }

  /**
   * The spilled records after `after` of one segment as they lie in the file, while the output
   * stays within `max` bytes (`used` already taken; at least one record overall).
   */
  private readSegmentBlock(segment: Segment, after: number, used: number, max: number): { bytes: Uint8Array; payload: number; cut: boolean } {
    let lo = 0
    let hi = segment.marks.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (segment.marks[mid].ts <= after) lo = mid + 1
      else hi = mid
    }
    // From the last mark at or before the cursor: one read that covers what the reader has
    // (at most a mark's spacing) and what fits its budget; records are then cut at their ends.
    let start = lo === 0 ? 0 : segment.marks[lo - 1].offset
    const budget = Math.max(max - used, 0) + HEADER * 64
    for (;;) {
      if (start + HEADER > segment.size) return { bytes: new Uint8Array(0), payload: 0, cut: false }
      let block = new Uint8Array(Math.min(segment.size - start, SPARSE + budget))
      this.preadFully(segment, block, start)
      let view = new DataView(block.buffer)
      let first = 0
      while (first + HEADER <= block.byteLength && recordTimestamp(view, first) <= after) first += HEADER + recordLength(view, first)
      if (first + HEADER > block.byteLength) {
        // All of this read is the reader's already: go on after it.
        start += first
        continue
      }
      if (first > 0) {
        block = block.subarray(first)
        view = new DataView(block.buffer, block.byteOffset, block.byteLength)
        start += first
      }
      let pos = 0
      let payload = 0
      let full = false
      while (pos + HEADER <= block.byteLength) {
        const length = recordLength(view, pos)
        if (used + payload > 0 && used + payload + length > max) {
          full = true
          break
        }
        if (pos + HEADER + length > block.byteLength) {
          if (pos > 0) break
          // A first record bigger than the read: read all of it.
          block = new Uint8Array(HEADER + length)
          this.preadFully(segment, block, start)
          view = new DataView(block.buffer)
        }
        payload += length
        pos += HEADER + length
      }
      // Cut when the budget is spent or this read ended before the segment did.
      return { bytes: block.subarray(0, pos), payload, cut: full || start + pos < segment.size }
    }
  }

  private preadFully(segment: Segment, into: Uint8Array, position: number): void {
    let read = 0
    while (read < into.byteLength) {
      const got = fs.readSync(segment.fd, into, read, into.byteLength - read, position + read)
      if (got === 0) throw new Error(`spill file ${segment.file} is shorter than written`)
      read += got
    }
  }

  private droppedNote(): string {
    return `the runner dropped ${this.droppedBytes} bytes of older output (it keeps ${this.memoryBytes} bytes in memory${this.spillDir ? ` and ${this.maxSpillBytes} on disk` : ""})\n`
  }

  /** Events after `after` by kind (the pull answer), at most about `maxLogBytes` of job output. */
  since(after: number, maxLogBytes = 4 * 1024 * 1024): JobEventsSince {
    const { events, lastUpdated, hasMore } = this.read(after, maxLogBytes)
    const jobStates: Array<JobStateEvent> = []
    const jobLogs: Array<LogEvent> = []
    const runnerLogs: Array<LogEvent> = []
    for (const e of events) {
      if (e.kind === "state") jobStates.push(e.state)
      else if (e.kind === "log") jobLogs.push({ timestamp: e.timestamp, message: e.message })
      else if (e.kind === "runner_log") runnerLogs.push({ timestamp: e.timestamp, message: e.message })
    }
    return { jobStates, jobLogs, runnerLogs, lastUpdated, hasMore }
  }

  /** Calls `listener` after every new event until the returned function is called. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /** Resolves once the log holds an event after `after` (at once if it already does). */
  changedAfter(after: number, signal?: AbortSignal): Promise<void> {
    if (this.last > after || signal?.aborted) return Promise.resolve()
    return new Promise((resolve) => {
      const done = () => {
        unsubscribe()
        signal?.removeEventListener("abort", done)
        resolve()
      }
      const unsubscribe = this.subscribe(() => {
        if (this.last > after) done()
      })
      signal?.addEventListener("abort", done)
    })
  }

  /** The latest job state, if any. */
  get currentState(): JobStateEvent | undefined {
    return this.states[this.states.length - 1]
  }
}
