// /api/project/{p}/logs/*: pages of a job submission's log (`poll`, upstream's route) and a
// live stream (`stream`) that first replays what is stored and then sends new lines the moment
// the engine stores them, ending once the run has finished. The stream is Server-Sent Events
// of JSON by default; a client that accepts `application/x-dstack-ts-logs` gets binary frames
// of the stored bytes instead (api/logFrames.ts).
import { Buffer, isUtf8 } from "node:buffer"
import { Duration, Effect, Option, Queue, Runtime } from "effect"
import { stream as honoStream, streamSSE } from "hono/streaming"
import type { StreamingApi } from "hono/utils/stream"
import * as Api from "../../api/runs.ts"
import { LOG_FRAME_HEADER, LOG_FRAMES_CONTENT_TYPE, LOG_FRAMES_TYPE, writeLogFrameHeader } from "../../api/logFrames.ts"
import { isRunStatusFinished } from "../../domain/Status.ts"
import { loadRunByName } from "../../engine/RunRecord.ts"
import { StateStore, type Change, type LogEvent, type LogQuery } from "../../ports/StateStore.ts"
import { badRequest, excerpt, fromStateStore, notFound } from "../ApiError.ts"
import { jsonRoute, rawRoute } from "../Route.ts"
import { resolveSubmission } from "./runs.ts"

const decoder = new TextDecoder("utf-8", { fatal: false })

/** About how much output one `logs` event (or one write of frames) of the live stream carries. */
const STREAM_EVENT_BYTES = 1024 * 1024

const FINAL_JOB_STATUSES: ReadonlySet<string> = new Set(["done", "failed", "terminated", "aborted"])

const hasIsUtf8 = typeof isUtf8 === "function"

/**
 * The JSON string literal of a message, as a "binary" string (one char per byte of its UTF-8):
 * valid UTF-8 is escaped byte for byte (JSON escapes only ASCII controls, quote and backslash,
 * so multi-byte sequences pass through unchanged) without a decode to UTF-16 and an encode
 * back; invalid UTF-8 is decoded with U+FFFD for the bad bytes, as before.
 */
const jsonStringBytes = (message: Uint8Array): string => {
  if (hasIsUtf8 && isUtf8(message)) {
    const buffer = Buffer.isBuffer(message) ? message : Buffer.from(message.buffer, message.byteOffset, message.byteLength)
    return JSON.stringify(buffer.toString("latin1"))
  }
  return Buffer.from(JSON.stringify(decoder.decode(message)), "utf8").toString("latin1")
}

/**
 * A page of events as one SSE `logs` event whose data is the JSON of `Api.LogEventWire[]`,
 * written directly: the live stream moves megabytes a second, and a Schema encode of each
 * event would cost more than the rest.
 */
const sseLogsEvent = (events: ReadonlyArray<LogEvent>): Uint8Array => {
  let out = "event: logs\ndata: ["
  for (let i = 0; i < events.length; i++) {
    const e = events[i]
    out += `${i === 0 ? "" : ","}{"timestamp":"${e.timestamp.toISOString()}","log_source":"${e.source}","message":${jsonStringBytes(e.message)}}`
  }
  return Buffer.from(`${out}]\n\n`, "latin1")
}

/**
 * A page of events as binary frames: each event's stored bytes behind a 16-byte header. Where
 * the store read the page as it lies in its file (FileLogs: records of the same header and the
 * bytes, adjacent), the frames are already there: the page is sent as that one view, no copy.
 */
const logFrames = (events: ReadonlyArray<LogEvent>): Uint8Array => {
  const inPlace = framesInPlace(events)
  if (inPlace !== undefined) return inPlace
  let total = 0
  for (const e of events) total += LOG_FRAME_HEADER + e.message.byteLength
  const out = Buffer.allocUnsafe(total)
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  let pos = 0
  for (const e of events) {
    writeLogFrameHeader(view, pos, e.source, e.message.byteLength, e.timestamp.getTime())
    out.set(e.message, pos + LOG_FRAME_HEADER)
    pos += LOG_FRAME_HEADER + e.message.byteLength
  }
  return out
}

const header = new Uint8Array(LOG_FRAME_HEADER)
const headerView = new DataView(header.buffer)

/**
 * The frames of `events` as one view of the buffer their messages lie in, when each message
 * lies right behind the 16 bytes its frame header would be (checked byte by byte) and right
 * after the previous one's; undefined otherwise.
 */
const framesInPlace = (events: ReadonlyArray<LogEvent>): Uint8Array | undefined => {
  if (events.length === 0) return undefined
  const first = events[0].message
  const buffer = first.buffer
  if (first.byteOffset < LOG_FRAME_HEADER) return undefined
  const start = first.byteOffset - LOG_FRAME_HEADER
  const bytes = new Uint8Array(buffer, 0, buffer.byteLength)
  let pos = start
  for (const e of events) {
    const m = e.message
    if (m.buffer !== buffer || m.byteOffset !== pos + LOG_FRAME_HEADER) return undefined
    writeLogFrameHeader(headerView, 0, e.source, m.byteLength, e.timestamp.getTime())
    for (let k = 0; k < LOG_FRAME_HEADER; k++) if (bytes[pos + k] !== header[k]) return undefined
    pos += LOG_FRAME_HEADER + m.byteLength
  }
  return new Uint8Array(buffer, start, pos - start)
}

/** A frame of `end` or `error` with its JSON. */
const controlFrame = (kind: "end" | "error", json: string): Uint8Array => {
  const payload = Buffer.from(json, "utf8")
  const out = Buffer.allocUnsafe(LOG_FRAME_HEADER + payload.byteLength)
  writeLogFrameHeader(new DataView(out.buffer, out.byteOffset, out.byteLength), 0, kind, payload.byteLength, Date.now())
  out.set(payload, LOG_FRAME_HEADER)
  return out
}

/**
 * One representation of the live stream: how a page of events, the `end` event and an `error`
 * are written. The follow loop is the same for both; only these bytes differ.
 */
interface StreamWriter {
  readonly logs: (events: ReadonlyArray<LogEvent>) => Uint8Array
  readonly end: (json: string) => Uint8Array | string
  readonly error: (json: string) => Uint8Array | string
}

/** Binary frames (api/logFrames.ts), for a client that accepts them (the SDK). */
const framesWriter: StreamWriter = {
  logs: logFrames,
  end: (json) => controlFrame("end", json),
  error: (json) => controlFrame("error", json)
}

/** Server-Sent Events of JSON; each event's data is one line, so it is written as is. */
const sseWriter: StreamWriter = {
  logs: sseLogsEvent,
  end: (json) => `event: end\ndata: ${json}\n\n`,
  error: (json) => `event: error\ndata: ${json}\n\n`
}

const toWire = (events: ReadonlyArray<LogEvent>) =>
  events.map((e) => ({ timestamp: e.timestamp, logSource: e.source, message: decoder.decode(e.message) }))

/**
 * Events as upstream's client reads them (it sends `X-API-VERSION`): the bytes in base64, and
 * the runner's own lines (diagnose) as `stdout`, since it knows only `stdout` and `stderr`.
 */
const toUpstreamWire = (events: ReadonlyArray<LogEvent>) =>
  events.map((e) => ({
    timestamp: e.timestamp,
    logSource: e.source === "runner" ? ("stdout" as const) : e.source,
    message: Buffer.from(e.message.buffer, e.message.byteOffset, e.message.byteLength).toString("base64")
  }))

const findSubmission = (project: string, runName: string, jobSubmissionId: string | null | undefined) =>
  Effect.gen(function* () {
    const loaded = yield* loadRunByName(project, runName).pipe(
      Effect.mapError((e) => (e.reason === "NotFound" ? notFound(`Run ${excerpt(runName)} does not exist in project ${excerpt(project)}`) : fromStateStore(e)))
    )
    const submission = resolveSubmission(loaded.record.run, jobSubmissionId)
    if (submission === undefined) {
      return yield* Effect.fail(
        jobSubmissionId
          ? badRequest(`Run ${excerpt(runName)} has no job submission ${excerpt(jobSubmissionId)}`, ["body", "job_submission_id"])
          : notFound(`Run ${excerpt(runName)} has no job submission yet`)
      )
    }
    return { runId: loaded.row.id, submission }
  })

const parseTime = (raw: string | undefined, name: string) => {
  if (raw === undefined || raw === "") return Effect.succeed(undefined)
  const date = /^\d+$/.test(raw) ? new Date(Number(raw)) : new Date(raw)
  return Number.isNaN(date.getTime()) ? Effect.fail(badRequest(`${name} must be an ISO date or epoch milliseconds, got ${excerpt(raw)}`, ["query", name])) : Effect.succeed(date)
}

export const logRoutes = [
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/logs/poll", summary: "A page of a job submission's log", tag: "logs", access: { project: "user" },
    request: Api.PollLogsRequest, response: Api.JobSubmissionLogs,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const project = ctx.projectName!
        const { submission } = yield* findSubmission(project, input.runName, input.jobSubmissionId)
        const store = yield* StateStore
        const query: LogQuery = {
          project,
          jobSubmissionId: submission,
          descending: input.descending,
          limit: input.limit,
          diagnose: input.diagnose,
          ...(input.startTime ? { startTime: input.startTime } : {}),
          ...(input.endTime ? { endTime: input.endTime } : {}),
          ...(input.nextToken ? { nextToken: input.nextToken } : {})
        }
        const page = yield* store.logs.poll(query).pipe(Effect.mapError(fromStateStore))
        const events = ctx.hono.req.header("x-api-version") === undefined ? toWire(page.events) : toUpstreamWire(page.events)
        return { logs: events, ...(page.nextToken ? { nextToken: page.nextToken } : {}) }
      })
  }),
  rawRoute({
    method: "GET", path: "/api/project/:project_name/logs/stream", summary: "Follow a job submission's log live (Server-Sent Events)", tag: "logs", access: { project: "user" },
    requestDescription: "Query: run_name, job_submission_id (optional), start_time (optional, ISO or epoch ms), diagnose (optional)",
    responseDescription: "text/event-stream: `logs` events (a JSON array of {timestamp, log_source, message}), then `end` with the run's status; with `Accept: application/x-dstack-ts-logs`, binary frames of the same (a 16-byte header: u8 kind 0 stdout, 1 stderr, 2 runner, 3 end, 4 error; u8 0; u16 0; u32 length; f64 timestamp ms; little endian; then the bytes)",
    handler: (ctx) =>
      Effect.gen(function* () {
        const project = ctx.projectName!
        const c = ctx.hono
        const runName = c.req.query("run_name")
        if (!runName) return yield* Effect.fail(badRequest("run_name is required", ["query", "run_name"]))
        const startTime = yield* parseTime(c.req.query("start_time"), "start_time")
        const diagnose = c.req.query("diagnose") === "true"
        const { runId, submission } = yield* findSubmission(project, runName, c.req.query("job_submission_id"))
        const store = yield* StateStore
        const runtime = yield* Effect.runtime<StateStore>()

        const follow = (write: (bytes: Uint8Array | string) => Promise<void>, writer: StreamWriter, aborted: () => boolean) =>
          Effect.scoped(
            Effect.gen(function* () {
              // Subscribe before the first read, so nothing appended in between is missed.
              const changes = yield* store.subscribe
              let cursor: string | undefined
              // Pages of about STREAM_EVENT_BYTES: a stored event may hold up to a megabyte of
              // output or a single line, so the page size follows what the events weigh.
              let eventBytes = 1024
              const drain = Effect.gen(function* () {
                while (!aborted()) {
                  const limit = Math.max(1, Math.min(1000, Math.floor(STREAM_EVENT_BYTES / eventBytes)))
                  const page = yield* store.logs.poll({
                    project,
                    jobSubmissionId: submission,
                    diagnose,
                    limit,
                    ...(cursor ? { nextToken: cursor } : startTime ? { startTime } : {})
                  })
                  if (page.events.length > 0) {
                    let bytes = 0
                    for (const e of page.events) bytes += e.message.byteLength
                    eventBytes = Math.max(1, bytes / page.events.length)
                    const out = writer.logs(page.events)
                    yield* Effect.promise(() => write(out))
                    cursor = page.cursor ?? cursor
                  }
                  if (!page.nextToken) return
                }
              })
              // Whether the job is over. The engine stores a job's last lines before its final
              // status, so a drain after seeing it finished gets them all.
              const isFinished = loadRunByName(project, runName).pipe(
                Effect.map(({ record }) => {
                  const run = record.run
                  const sub = run.jobs.flatMap((j) => j.jobSubmissions).find((s) => s.id === submission)
                  const finished = isRunStatusFinished(run.status) || (sub !== undefined && FINAL_JOB_STATUSES.has(sub.status))
                  return finished ? { status: run.status as string, jobStatus: (sub?.status ?? null) as string | null } : undefined
                }),
                Effect.catchAll(() => Effect.succeed({ status: "deleted", jobStatus: null as string | null }))
              )
              let check = true
              while (!aborted()) {
                const finished = check ? yield* isFinished : undefined
                yield* drain
                if (finished !== undefined) {
                  const out = writer.end(JSON.stringify({ status: finished.status, job_status: finished.jobStatus }))
                  yield* Effect.promise(() => write(out))
                  return
                }
                // Sleep until this submission's log or this run changes (or a safety timeout);
                // only a change of the run (or the timeout) needs the run read again.
                check = false
                const relevant = (change: Change) =>
                  (change.kind === "log" && change.id === submission) || (change.kind === "run" && change.id === runId)
                while (true) {
                  const change = yield* Queue.take(changes).pipe(Effect.timeout(Duration.seconds(5)), Effect.option)
                  if (Option.isNone(change)) {
                    check = true
                    break
                  }
                  if (relevant(change.value)) {
                    if (change.value.kind === "run") check = true
                    break
                  }
                }
                for (const change of yield* Queue.takeAll(changes)) if (change.kind === "run" && change.id === runId) check = true
              }
            })
          ).pipe(
            Effect.catchAllCause((cause) => {
              const out = writer.error(JSON.stringify({ msg: String(cause) }))
              return Effect.promise(() => write(out))
            })
          )

        // One follow loop, two representations: binary frames for a client that accepts them,
        // Server-Sent Events (hono's streamSSE sets their headers) for anyone else.
        const binary = (c.req.header("accept") ?? "").includes(LOG_FRAMES_TYPE)
        const writer = binary ? framesWriter : sseWriter
        const body = async (stream: StreamingApi) => {
          let closed = false
          stream.onAbort(() => {
            closed = true
          })
          await Runtime.runPromise(runtime)(follow((bytes) => stream.write(bytes).then(() => undefined), writer, () => closed))
        }
        if (!binary) return streamSSE(c, body)
        c.header("content-type", LOG_FRAMES_CONTENT_TYPE)
        c.header("cache-control", "no-cache")
        return honoStream(c, body)
      })
  })
]
