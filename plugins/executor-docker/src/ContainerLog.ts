/**
 * A container's output, delivered whole. The executor follows the container's log (with
 * timestamps) while it runs, but Docker can end a followed log when the container ends before it
 * has sent the last entries: seen here with Docker 20.10 and the json-file driver, a fast
 * 5,000-line output lost its last 5–30% in about 1 run in 20. So once the container has ended
 * the log is read once more, from a second before the last entry followed, and each entry is
 * delivered unless it was followed already — known by its timestamp, stream and length, which
 * the followed copies of the last second are kept for (at most `KEPT` of them: a busier log keeps
 * a shorter stretch, and the second read skips what came before it).
 */

export type LogStream = "stdout" | "stderr"

/** An entry's timestamp as Docker writes it in UTC (RFC 3339, nine fraction digits): ordered as strings. */
const FIXED = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/
const ANY = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/

/** The timestamp in the fixed UTC form (another zone, or fewer digits, converted), or undefined if it is none. */
const normalize = (text: string): string | undefined => {
  if (FIXED.test(text)) return text
  const m = ANY.exec(text)
  if (m === null) return undefined
  const ms = Date.parse(`${m[1]}${m[3]}`)
  if (Number.isNaN(ms)) return undefined
  return `${new Date(ms).toISOString().slice(0, 19)}.${(m[2] ?? "").padEnd(9, "0")}Z`
}

const seconds = (ts: string): number => Date.parse(`${ts.slice(0, 19)}Z`) / 1000

/** The same instant one second earlier, in the fixed form. */
const secondBefore = (ts: string): string => `${new Date((seconds(ts) - 1) * 1000).toISOString().slice(0, 19)}${ts.slice(19)}`

/** The most followed entries kept for the second read to recognise. */
export const KEPT = 10_000

const SPACE = 0x20
/** An entry's payload split into its timestamp and its bytes (undefined when it carries no timestamp). */
const split = (payload: Uint8Array): { ts: string; bytes: Uint8Array } | undefined => {
  const end = payload.indexOf(SPACE)
  if (end < 20 || end > 40) return undefined
  let text = ""
  for (let i = 0; i < end; i++) text += String.fromCharCode(payload[i]!)
  const ts = normalize(text)
  return ts === undefined ? undefined : { ts, bytes: payload.subarray(end + 1) }
}

export class ContainerLog {
  /** The followed entries of the last second before the newest one, oldest first, from `head` on. */
  private recent: Array<{ ts: string; key: string }> = []
  private head = 0
  private readonly counts = new Map<string, number>()
  private newest: string | undefined
  /** The second before the newest entry's, in the fixed form without its fraction. */
  private secondBefore = ""
  /** Followed entries before this are forgotten: a second before the newest, or later for want of room. */
  private cutoff = ""
  /** Entries the second read found that the followed log had missed. */
  recovered = 0

  constructor(private readonly emit: (stream: LogStream, bytes: Uint8Array) => void) {}

  /** An entry of the followed log: delivered, and remembered for a second. */
  followed(stream: LogStream, payload: Uint8Array): void {
    const entry = split(payload)
    if (entry === undefined) return this.emit(stream, payload)
    this.emit(stream, entry.bytes)
    if (this.newest === undefined || entry.ts > this.newest) {
      if (this.newest === undefined || entry.ts.slice(0, 19) !== this.newest.slice(0, 19)) this.secondBefore = secondBefore(entry.ts).slice(0, 19)
      const second = `${this.secondBefore}${entry.ts.slice(19)}`
      // Never back: a stretch forgotten for want of room stays forgotten.
      if (second > this.cutoff) this.cutoff = second
      this.newest = entry.ts
    }
    const key = `${entry.ts}|${stream}|${entry.bytes.length}`
    this.recent.push({ ts: entry.ts, key })
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1)
    while (this.head < this.recent.length && this.recent[this.head]!.ts < this.cutoff) this.forget(this.recent[this.head++]!.key)
    if (this.recent.length - this.head > KEPT) {
      while (this.recent.length - this.head > KEPT) this.forget(this.recent[this.head++]!.key)
      // What was forgotten for want of room lies before the oldest entry kept.
      const oldestKept = this.recent[this.head]!.ts
      if (oldestKept > this.cutoff) this.cutoff = oldestKept
    }
    // Forgotten entries are dropped in one copy once they are half the array (a shift each would
    // make a busy log quadratic).
    if (this.head > 1024 && this.head * 2 > this.recent.length) {
      this.recent = this.recent.slice(this.head)
      this.head = 0
    }
  }

  /** Where the second read starts (Docker's `since`, whole seconds), or undefined to read it all. */
  since(): string | undefined {
    return this.newest === undefined ? undefined : String(Math.floor(seconds(this.newest)) - 1)
  }

  /** An entry of the second read: delivered unless the followed log had it. */
  reread(stream: LogStream, payload: Uint8Array): void {
    const entry = split(payload)
    if (entry === undefined) return
    if (this.newest !== undefined && entry.ts < this.cutoff) return
    const key = `${entry.ts}|${stream}|${entry.bytes.length}`
    if (this.counts.has(key)) return this.forget(key)
    this.recovered++
    this.emit(stream, entry.bytes)
  }

  private forget(key: string): void {
    const n = this.counts.get(key) ?? 0
    if (n <= 1) this.counts.delete(key)
    else this.counts.set(key, n - 1)
  }
}
