/**
 * Job logs in append-only files, for the embedded store: PGlite moves bytes through its WASM
 * boundary at a few MB/s, far below what heavy logging needs, while a file append runs at disk
 * speed. One file per job submission and stream (job output; runner events), records of a
 * 16-byte header and the message bytes, an in-memory index per stream for paging.
 *
 * Durability matches the database's: an append returns after write(2), so a killed process
 * loses nothing acknowledged; a torn record at the tail (power loss mid-write) is cut off when
 * the stream is next opened. One process owns the directory (the embedded store's lock).
 *
 * The files of the streams in use stay open (a bounded number, the least recently used closed
 * first; any idle for half a minute closed too, so a finished job's files do not stay open):
 * an append is one writev(2) of the headers and the messages as they are, a page one pread(2).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Buffer } from "node:buffer"
import { Effect } from "effect"
import { RecordHeader, StateStore } from "@dstack-ts/core"

type Change = StateStore.Change
type LogEvent = StateStore.LogEvent
type LogPage = StateStore.LogPage
type LogQuery = StateStore.LogQuery
type Logs = StateStore.Logs
type LogSource = StateStore.LogSource
type NewLogEvent = StateStore.NewLogEvent
const { MAX_LOG_LIMIT, StateStoreError } = StateStore
type StateStoreError = StateStore.StateStoreError

// Each record: core's 16-byte record header (kind = the source's index below, message length,
// timestamp), then the message; the layout of a binary logs/stream frame, so pages go out as read.
const HEADER = RecordHeader.RECORD_HEADER
const SOURCES: ReadonlyArray<LogSource> = ["stdout", "stderr", "runner"]

/** The index of one stream: where each record is, in append order, and the order to read. */
interface StreamIndex {
  readonly file: string
  size: number
  ts: Array<number>
  offset: Array<number>
  length: Array<number>
  source: Array<number>
  /** Record numbers sorted by (timestamp, append order); null while appends came in order. */
  order: Array<number> | null
  lastUsed: number
  /** The open file (read and append), or null while closed. */
  fd: number | null
  /** When the file was last read or written through `fd`. */
  fdUsed: number
}

export interface FileLogsOptions {
  /** The directory the log files live under (created if missing). */
  readonly dir: string
  /** Called after each append with the job submissions that got events. */
  readonly announce?: (change: Change) => void
  /** How many stream indexes stay in memory (default 256); the least recently used go first. */
  readonly maxOpenStreams?: number
  /** How many log files stay open (default 64); the least recently used are closed first. */
  readonly maxOpenFiles?: number
}

/** An open log file unused this long is closed (a finished job's among them). */
const IDLE_CLOSE_MS = 30_000

/** Appends with messages at least this big on average go out as they are (writev), smaller ones copied into one buffer. */
const WRITEV_MIN_AVERAGE = 4096

/** At most this many buffers per writev(2) (IOV_MAX is 1024 on Linux). */
const MAX_IOV = 1024

const fail = (method: string, reason: StateStoreError["reason"], message: string, cause?: unknown) =>
  new StateStoreError({ module: "FileLogs", method, reason, message, ...(cause === undefined ? {} : { cause }) })

// File names from ids: safe ids as they are, anything else hex-encoded behind a `~`.
const safeName = (s: string): string =>
  /^[A-Za-z0-9_-]{1,128}$/.test(s) ? s : `~${Buffer.from(s, "utf8").toString("hex")}`

export const make = (options: FileLogsOptions): Logs => {
  const indexes = new Map<string, StreamIndex>()
  const maxOpen = options.maxOpenStreams ?? 256
  const maxFiles = Math.max(1, options.maxOpenFiles ?? 64)
  /** The indexes whose file is open. */
  const open = new Set<StreamIndex>()
  const madeDirs = new Set<string>()
  let sweep: ReturnType<typeof setTimeout> | undefined

  const closeFile = (index: StreamIndex) => {
    if (index.fd === null) return
    const fd = index.fd
    index.fd = null
    open.delete(index)
    try {
      fs.closeSync(fd)
    } catch {
      // already gone
    }
  }

  const sweepIdle = () => {
    sweep = undefined
    const now = Date.now()
    for (const index of [...open]) if (now - index.fdUsed >= IDLE_CLOSE_MS) closeFile(index)
    scheduleSweep()
  }

  const scheduleSweep = () => {
    if (sweep !== undefined || open.size === 0) return
    sweep = setTimeout(sweepIdle, IDLE_CLOSE_MS)
    // The sweep must not keep a process alive.
    ;(sweep as { unref?: () => void }).unref?.()
  }

  /** The stream's file open for reading and appending (created, with its directory, if missing). */
  const fdOf = (index: StreamIndex): number => {
    index.fdUsed = Date.now()
    if (index.fd !== null) return index.fd
    const dir = path.dirname(index.file)
    if (!madeDirs.has(dir)) {
      fs.mkdirSync(dir, { recursive: true })
      madeDirs.add(dir)
    }
    let fd: number
    try {
      fd = fs.openSync(index.file, "a+")
    } catch (e) {
      // The directory went away underneath (deleted by hand): make it again, once.
      if ((e as { code?: string }).code !== "ENOENT") throw e
      fs.mkdirSync(dir, { recursive: true })
      fd = fs.openSync(index.file, "a+")
    }
    index.fd = fd
    open.add(index)
    if (open.size > maxFiles) {
      let oldest: StreamIndex | undefined
      for (const candidate of open) {
        if (candidate !== index && (oldest === undefined || candidate.fdUsed < oldest.fdUsed)) oldest = candidate
      }
      if (oldest !== undefined) closeFile(oldest)
    }
    scheduleSweep()
    return fd
  }

  const fileOf = (project: string, jobSubmissionId: string, diagnose: boolean) =>
    path.join(options.dir, safeName(project), `${safeName(jobSubmissionId)}${diagnose ? ".runner" : ""}.log`)

  // Reads the headers of a file and cuts off a torn tail record.
  const load = (file: string): StreamIndex => {
    const index: StreamIndex = { file, size: 0, ts: [], offset: [], length: [], source: [], order: null, lastUsed: Date.now(), fd: null, fdUsed: 0 }
    let fd: number
    try {
      fd = fs.openSync(file, "r")
    } catch (e) {
      if ((e as { code?: string }).code === "ENOENT") return index
      throw e
    }
    try {
      const size = fs.fstatSync(fd).size
      const header = Buffer.alloc(HEADER)
      const headerView = RecordHeader.viewOf(header)
      let pos = 0
      let lastTs = -Infinity
      while (pos + HEADER <= size) {
        fs.readSync(fd, header, 0, HEADER, pos)
        const { kind, length: len, timestamp: ts } = RecordHeader.readRecordHeader(headerView, 0)
        if (pos + HEADER + len > size) break
        // A whole record of a source this store never writes: the file is not ours or is
        // damaged mid-way. Refuse it; truncating here would throw away every record after it.
        if (SOURCES[kind] === undefined) {
          throw fail("read", "Invalid", `log file ${file} has a record of unknown source ${kind} at byte ${pos}`)
        }
        if (ts < lastTs) index.order = [] // rebuilt below
        lastTs = Math.max(lastTs, ts)
        index.ts.push(ts)
        index.offset.push(pos + HEADER)
        index.length.push(len)
        index.source.push(kind)
        pos += HEADER + len
      }
      index.size = pos
      if (pos < size) fs.truncateSync(file, pos)
    } finally {
      fs.closeSync(fd)
    }
    if (index.order !== null) index.order = sortedOrder(index)
    return index
  }

  /** Writes all of `pieces` at the end of the file, in order, with writev(2) (partial writes resumed). */
  const writeAll = (fd: number, pieces: ReadonlyArray<Uint8Array>) => {
    let i = 0
    let skip = 0
    while (i < pieces.length) {
      const batch: Array<Uint8Array> = []
      for (let k = i; k < pieces.length && batch.length < MAX_IOV; k++) batch.push(k === i && skip > 0 ? pieces[k].subarray(skip) : pieces[k])
      let written = batch.length === 1 ? fs.writeSync(fd, batch[0]) : fs.writevSync(fd, batch)
      // Past the pieces written whole, into the one cut short.
      while (i < pieces.length && written >= pieces[i].byteLength - skip) {
        written -= pieces[i].byteLength - skip
        skip = 0
        i++
      }
      skip += written
    }
  }

  /** Writes the records; a write that fails part way is cut off again, so the file stays what its index says. */
  const writeAndIndex = (index: StreamIndex, fd: number, pieces: ReadonlyArray<Uint8Array>) => {
    try {
      writeAll(fd, pieces)
    } catch (e) {
      try {
        fs.ftruncateSync(fd, index.size)
      } catch {
        // the load of the next open cuts a torn tail off too
      }
      throw e
    }
  }

  const sortedOrder = (index: StreamIndex): Array<number> =>
    index.ts.map((_, i) => i).sort((a, b) => index.ts[a] - index.ts[b] || a - b)

  const indexOf = (file: string): StreamIndex => {
    let index = indexes.get(file)
    if (index === undefined) {
      index = load(file)
      indexes.set(file, index)
      if (indexes.size > maxOpen) {
        let oldest: StreamIndex | undefined
        for (const candidate of indexes.values()) {
          if (candidate !== index && (oldest === undefined || candidate.lastUsed < oldest.lastUsed)) oldest = candidate
        }
        if (oldest !== undefined) {
          indexes.delete(oldest.file)
          closeFile(oldest)
        }
      }
    }
    index.lastUsed = Date.now()
    return index
  }

  const appendSync = (events: ReadonlyArray<NewLogEvent>): Array<Change> => {
    const groups = new Map<string, { project: string; id: string; events: Array<NewLogEvent> }>()
    for (const e of events) {
      const file = fileOf(e.project, e.jobSubmissionId, e.source === "runner")
      const group = groups.get(file) ?? { project: e.project, id: e.jobSubmissionId, events: [] }
      group.events.push(e)
      groups.set(file, group)
    }
    const changes = new Map<string, Change>()
    for (const [file, group] of groups) {
      // Index first (it repairs a torn tail), then write at its end.
      const index = indexOf(file)
      const fd = fdOf(index)
      let total = 0
      for (const e of group.events) total += HEADER + e.message.byteLength
      const headers = Buffer.allocUnsafe(HEADER * group.events.length)
      const headersView = RecordHeader.viewOf(headers)
      for (let i = 0; i < group.events.length; i++) {
        const e = group.events[i]
        RecordHeader.writeRecordHeader(headersView, i * HEADER, SOURCES.indexOf(e.source), e.message.byteLength, e.timestamp.getTime())
      }
      if (total >= WRITEV_MIN_AVERAGE * group.events.length) {
        // Big messages (heavy output) go out as they are, behind their headers: no copy.
        const pieces: Array<Uint8Array> = []
        for (let i = 0; i < group.events.length; i++) pieces.push(headers.subarray(i * HEADER, (i + 1) * HEADER), group.events[i].message)
        writeAndIndex(index, fd, pieces)
      } else {
        const out = Buffer.allocUnsafe(total)
        let pos = 0
        for (let i = 0; i < group.events.length; i++) {
          const message = group.events[i].message
          headers.copy(out, pos, i * HEADER, (i + 1) * HEADER)
          out.set(message, pos + HEADER)
          pos += HEADER + message.byteLength
        }
        writeAndIndex(index, fd, [out])
      }
      let at = index.size
      for (const e of group.events) {
        const ts = e.timestamp.getTime()
        const r = index.ts.length
        const lastTs = r === 0 ? -Infinity : index.ts[index.order === null ? r - 1 : index.order[r - 1]]
        index.ts.push(ts)
        index.offset.push(at + HEADER)
        index.length.push(e.message.byteLength)
        index.source.push(SOURCES.indexOf(e.source))
        at += HEADER + e.message.byteLength
        if (index.order === null && ts >= lastTs) continue
        // Out of order: keep an explicit read order, inserting by binary search (late
        // events are usually only a little late, so the splice is near the end).
        const order = (index.order ??= Array.from({ length: r }, (_, k) => k))
        let lo = 0
        let hi = order.length
        while (lo < hi) {
          const mid = (lo + hi) >>> 1
          if (index.ts[order[mid]] <= ts) lo = mid + 1
          else hi = mid
        }
        order.splice(lo, 0, r)
      }
      index.size = at
      changes.set(`${group.project}\u0000${group.id}`, { kind: "log", id: group.id, project: group.project })
    }
    return [...changes.values()]
  }

  // The first position in read order strictly after (ts, seq) ascending, or before it descending.
  const positionAfter = (index: StreamIndex, at: (k: number) => number, ts: number, seq: number, descending: boolean) => {
    const n = index.ts.length
    const cmp = (k: number) => {
      const r = at(k)
      return index.ts[r] - ts || r - seq
    }
    // Binary search over the ascending order.
    let lo = 0
    let hi = n
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (descending ? cmp(mid) < 0 : cmp(mid) <= 0) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  const pollSync = (q: LogQuery): LogPage => {
    const limit = q.limit ?? MAX_LOG_LIMIT
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LOG_LIMIT) {
      throw fail("logs.poll", "Invalid", `limit must be an integer in 1..${MAX_LOG_LIMIT}, got ${limit}`)
    }
    let token: { ts: number; seq: number } | undefined
    if (q.nextToken !== undefined && q.nextToken !== "") {
      const match = /^(-?\d+)_(\d+)$/.exec(q.nextToken)
      if (match === null) throw fail("logs.poll", "Invalid", `malformed next_token '${q.nextToken}'`)
      token = { ts: Number(match[1]), seq: Number(match[2]) }
    }
    const index = indexOf(fileOf(q.project, q.jobSubmissionId, q.diagnose === true))
    const n = index.ts.length
    const order = index.order
    const at = (k: number) => (order === null ? k : order[k])
    const descending = q.descending === true
    // [lo, hi) in ascending read order: the time window, then the token.
    const start = q.startTime?.getTime()
    const end = q.endTime?.getTime()
    let lo = start === undefined ? 0 : positionAfter(index, at, start, -1, false)
    let hi = end === undefined ? n : positionAfter(index, at, end, -1, false)
    if (token !== undefined) {
      if (descending) hi = Math.min(hi, positionAfter(index, at, token.ts, token.seq, true))
      else lo = Math.max(lo, positionAfter(index, at, token.ts, token.seq, false))
    }
    if (hi <= lo) return { events: [] }
    const picked: Array<number> = []
    if (descending) for (let k = hi - 1; k >= lo && picked.length < limit; k--) picked.push(at(k))
    else for (let k = lo; k < hi && picked.length < limit; k++) picked.push(at(k))
    const more = hi - lo > picked.length

    // Reads runs of adjacent records with one call each: a page of in-order appends is one
    // read; late events cost a read per run. A run is read with its first record's header, so
    // every message lies right behind its stored header, which is a frame of the binary log
    // stream (api/logFrames.ts) as it is: `logs/stream` then sends a page without a copy.
    const messages = new Map<number, Uint8Array>()
    const byOffset = [...picked].sort((a, b) => index.offset[a] - index.offset[b])
    const fd = fdOf(index)
    let i = 0
    while (i < byOffset.length) {
      let j = i
      while (j + 1 < byOffset.length && index.offset[byOffset[j + 1]] === index.offset[byOffset[j]] + index.length[byOffset[j]] + HEADER) j++
      const from = index.offset[byOffset[i]] - HEADER
      const to = index.offset[byOffset[j]] + index.length[byOffset[j]]
      const bytes = Buffer.allocUnsafe(to - from)
      let read = 0
      while (read < bytes.length) {
        const got = fs.readSync(fd, bytes, read, bytes.length - read, from + read)
        if (got === 0) throw fail("logs.poll", "Unknown", `log file ${index.file} is shorter than its index`)
        read += got
      }
      for (let k = i; k <= j; k++) {
        const r = byOffset[k]
        messages.set(r, new Uint8Array(bytes.buffer, bytes.byteOffset + index.offset[r] - from, index.length[r]))
      }
      i = j + 1
    }
    const events: Array<LogEvent> = picked.map((r) => ({
      timestamp: new Date(index.ts[r]),
      source: SOURCES[index.source[r]],
      message: messages.get(r)!
    }))
    const lastPicked = picked[picked.length - 1]
    if (lastPicked === undefined) return { events }
    const position = `${index.ts[lastPicked]}_${lastPicked}`
    return more ? { events, nextToken: position, cursor: position } : { events, cursor: position }
  }

  const io = <A>(method: string, f: () => A): Effect.Effect<A, StateStoreError> =>
    Effect.try({
      try: f,
      catch: (e) => (e instanceof StateStoreError ? e : fail(method, "Unavailable", e instanceof Error ? e.message : String(e), e))
    })

  return {
    append: (events) =>
      io("logs.append", () => appendSync(events)).pipe(
        Effect.tap((changes) =>
          Effect.sync(() => {
            for (const c of changes) options.announce?.(c)
          })
        ),
        Effect.asVoid
      ),
    poll: (query) => io("logs.poll", () => pollSync(query)),
    delete: (project, ids) =>
      io("logs.delete", () => {
        for (const id of ids) {
          for (const diagnose of [false, true]) {
            const file = fileOf(project, id, diagnose)
            const index = indexes.get(file)
            if (index !== undefined) closeFile(index)
            indexes.delete(file)
            fs.rmSync(file, { force: true })
          }
        }
      })
  }
}
