/**
 * The runner's memory of one job: state events, job output and runner messages, on one
 * strictly increasing millisecond clock, so that "everything after timestamp T" is a lossless
 * cursor for pulls and live followers alike.
 */
import type { JobStateEvent, LogEvent } from "./RunnerProtocol.ts"

interface PendingLog {
  timestamp: number
  chunks: Array<Uint8Array>
  size: number
}

/** The largest log event built by joining chunks that arrive within the same millisecond. */
const MAX_EVENT_BYTES = 1024 * 1024

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

export class JobEventLog {
  private readonly states: Array<JobStateEvent> = []
  private readonly jobLogs: Array<PendingLog> = []
  private readonly runnerLogs: Array<PendingLog> = []
  private last = 0
  /** No event at or before this timestamp may change any more: a reader has seen it. */
  private sealedUpTo = 0
  private readonly listeners = new Set<() => void>()

  constructor(private readonly now: () => number = Date.now) {}

  /** The newest timestamp in the log (0 when empty). */
  get lastUpdated(): number {
    return this.last
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
    this.addLog(this.jobLogs, bytes)
  }

  addRunnerLog(message: string): void {
    this.addLog(this.runnerLogs, new TextEncoder().encode(message.endsWith("\n") ? message : `${message}\n`))
  }

  private addLog(target: Array<PendingLog>, bytes: Uint8Array): void {
    if (bytes.length === 0) return
    // Copy: a reader may hold the event while the producer reuses its buffer.
    const chunk = new Uint8Array(bytes)
    const tail = target[target.length - 1]
    // Chunks that arrive within one millisecond join the newest event, as long as no reader
    // has seen it and nothing else came after it: timestamps stay close to the wall clock
    // under heavy output without a cursor ever skipping bytes.
    if (
      tail !== undefined &&
      tail.timestamp === this.last &&
      tail.timestamp > this.sealedUpTo &&
      tail.timestamp >= this.now() &&
      tail.size + chunk.length <= MAX_EVENT_BYTES
    ) {
      tail.chunks.push(chunk)
      tail.size += chunk.length
    } else {
      target.push({ timestamp: this.tick(), chunks: [chunk], size: chunk.length })
    }
    this.notify()
  }

  /**
   * Forgets every event (a new job starts on this runner) while the clock keeps running, so
   * a cursor from before the reset can never see the new job's events as old ones.
   */
  clear(): void {
    this.states.length = 0
    this.jobLogs.length = 0
    this.runnerLogs.length = 0
    this.sealedUpTo = this.last
    this.notify()
  }

  /**
   * Events after `after`, at most about `maxLogBytes` of job output. When cut, the cursor is
   * the newest timestamp handed out and `hasMore` is set.
   */
  since(after: number, maxLogBytes = 4 * 1024 * 1024): JobEventsSince {
    let cutoff = this.last
    let hasMore = false
    const jobLogs: Array<LogEvent> = []
    let bytes = 0
    for (let i = firstAfter(this.jobLogs, after); i < this.jobLogs.length; i++) {
      const event = this.jobLogs[i]
      if (bytes > 0 && bytes + event.size > maxLogBytes) {
        cutoff = this.jobLogs[i - 1].timestamp
        hasMore = true
        break
      }
      bytes += event.size
      jobLogs.push({ timestamp: event.timestamp, message: joinChunks(event.chunks, event.size) })
    }
    const upTo = <T extends { timestamp: number }>(events: ReadonlyArray<T>): Array<T> => {
      const out: Array<T> = []
      for (let i = firstAfter(events, after); i < events.length && events[i].timestamp <= cutoff; i++) out.push(events[i])
      return out
    }
    const runnerLogs = upTo(this.runnerLogs).map((e) => ({ timestamp: e.timestamp, message: joinChunks(e.chunks, e.size) }))
    this.sealedUpTo = Math.max(this.sealedUpTo, cutoff)
    return { jobStates: upTo(this.states), jobLogs, runnerLogs, lastUpdated: Math.max(after, cutoff), hasMore }
  }

  /** Calls `listener` after every new event until the returned function is called. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /** Resolves once the log holds an event after `after` (at once if it already does). */
  changedAfter(after: number, signal?: AbortSignal): Promise<void> {
    if (this.last > after) return Promise.resolve()
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
