/**
 * The runner's binary event stream (`GET /logs_stream` with `Accept: application/x-dstack-ts-events`):
 * the same events as the Server-Sent Events feed, as length-prefixed frames, so that job output
 * travels as raw bytes — no base64, no JSON, no per-line parsing on either side. A server that
 * asks for it and gets `text/event-stream` back talks to an older runner and reads SSE instead.
 *
 * A frame: a 16-byte header (u8 kind, u8 0, u16 0, u32 payload length, f64 timestamp in epoch
 * milliseconds; little endian), then the payload: the output bytes for `log`/`runner_log`, the
 * JSON of the state event for `state` (the pull wire format), nothing for `end` (whose
 * timestamp is the stream's last cursor) nor for `heartbeat`.
 *
 * A `heartbeat` frame is sent only to a follower that asked for one (`?heartbeat=<ms>`, the
 * answer then says `Dstack-Runner-Heartbeat: <ms>`): after that long with nothing else to send,
 * so that the follower can tell a quiet job from a runner that stopped answering without a
 * request of its own every few seconds. Its timestamp is the stream's cursor; it is no event of
 * the job (nothing stores it), and a follower that never asks never sees the kind.
 */
import { Buffer } from "node:buffer"
import { Schema } from "effect"
import { FrameAssembler } from "../internal/FrameAssembler.ts"
import { JobStateEvent } from "./RunnerProtocol.ts"
import { readRecordHeader, RECORD_HEADER, recordLength, writeRecordHeader } from "../api/RecordHeader.ts"

/** The media type of the stream; `version` changes whenever frames change incompatibly. */
export const EVENT_STREAM_TYPE = "application/x-dstack-ts-events"
export const EVENT_STREAM_VERSION = 1
export const EVENT_STREAM_CONTENT_TYPE = `${EVENT_STREAM_TYPE}; version=${EVENT_STREAM_VERSION}`

export const FRAME_HEADER = RECORD_HEADER

/** The request's query parameter that asks for heartbeats, and the answer's header that grants them. */
export const HEARTBEAT_PARAM = "heartbeat"
export const HEARTBEAT_HEADER = "dstack-runner-heartbeat"
/** The shortest and longest heartbeat interval a runner grants (a request outside is brought within). */
export const HEARTBEAT_MIN_MS = 100
export const HEARTBEAT_MAX_MS = 60_000

export type StreamEventKind = "state" | "log" | "runner_log" | "end" | "heartbeat"
const KIND_CODES: Readonly<Record<StreamEventKind, number>> = { state: 1, log: 2, runner_log: 3, end: 4, heartbeat: 5 }
const KINDS: ReadonlyArray<StreamEventKind | undefined> = [undefined, "state", "log", "runner_log", "end", "heartbeat"]

/** One event of the stream, in the order the runner recorded them. */
export type StreamEvent =
  | { readonly kind: "state"; readonly timestamp: number; readonly state: JobStateEvent }
  | { readonly kind: "log" | "runner_log"; readonly timestamp: number; readonly message: Uint8Array }
  | { readonly kind: "end"; readonly timestamp: number }

/** What a stream's frames carry: the job's events, and heartbeats (no event of the job). */
export type StreamFrame = StreamEvent | { readonly kind: "heartbeat"; readonly timestamp: number }

const encodeState = Schema.encodeSync(JobStateEvent)
const decodeState = Schema.decodeUnknownSync(JobStateEvent)
const utf8 = new TextEncoder()

/** Encodes events as frames into one buffer. */
export const encodeFrames = (events: ReadonlyArray<StreamFrame>): Uint8Array => {
  const payloads: Array<Uint8Array | undefined> = []
  let total = 0
  for (const event of events) {
    const payload = event.kind === "state" ? utf8.encode(JSON.stringify(encodeState(event.state))) : event.kind === "log" || event.kind === "runner_log" ? event.message : undefined
    payloads.push(payload)
    total += FRAME_HEADER + (payload?.byteLength ?? 0)
  }
  const out = new Uint8Array(total)
  const view = new DataView(out.buffer)
  let pos = 0
  for (let i = 0; i < events.length; i++) {
    const payload = payloads[i]
    const length = payload?.byteLength ?? 0
    writeRecordHeader(view, pos, KIND_CODES[events[i].kind], length, events[i].timestamp)
    if (payload !== undefined) out.set(payload, pos + FRAME_HEADER)
    pos += FRAME_HEADER + length
  }
  return out
}

/**
 * Splits a byte stream into events, whatever its chunking: `push` returns the events the
 * chunk completes. A frame that lies whole in a chunk is a view into it; one that spans chunks
 * is copied, as its pieces arrive, into a buffer of its size allocated once its header is read
 * (so no chunk is held on to: a megabyte of output that arrives in 64 KiB reads is one buffer,
 * and the reads are garbage at once). A frame of an unknown kind is an error (a newer runner
 * speaking a protocol this reader does not know must not be misread).
 */
export class FrameDecoder {
  private readonly frames = new FrameAssembler<StreamFrame>({
    headerBytes: FRAME_HEADER,
    lengthAt: checkedLength,
    frameAt: (buffer, pos, length) => decodeFrame(buffer, pos, length, pos),
    // Every byte is overwritten as the frame's pieces arrive: no need to zero it first.
    alloc: (size) => Buffer.allocUnsafe(size)
  })

  push(chunk: Uint8Array): Array<StreamFrame> {
    return this.frames.push(chunk)
  }

  /** Bytes of an unfinished frame held back (non-zero at the end of a stream means it was cut). */
  get buffered(): number {
    return this.frames.pending
  }
}

/** No frame is bigger (the runner's are at most a megabyte of output): a bigger length is a corrupt stream. */
const MAX_FRAME_BYTES = 64 * 1024 * 1024

/** The payload length of the frame whose header is at `pos`, after checking its kind and size. */
const checkedLength = (buffer: Uint8Array, pos: number): number => {
  const code = buffer[pos]
  if (KINDS[code] === undefined) throw new Error(`unknown event frame kind ${code} at the start of a frame`)
  const length = recordLength(new DataView(buffer.buffer, buffer.byteOffset + pos, FRAME_HEADER), 0)
  if (length > MAX_FRAME_BYTES) throw new Error(`an event frame of ${length} bytes is over the limit of ${MAX_FRAME_BYTES} (a corrupt stream?)`)
  return length
}

/** The event of the frame at `pos` of `buffer` (`at`: its position in the stream's chunk, for errors). */
const decodeFrame = (buffer: Uint8Array, pos: number, length: number, at: number): StreamFrame => {
  const view = new DataView(buffer.buffer, buffer.byteOffset + pos, FRAME_HEADER)
  const { kind: code, timestamp } = readRecordHeader(view, 0)
  const kind = KINDS[code]
  const payload = buffer.subarray(pos + FRAME_HEADER, pos + FRAME_HEADER + length)
  switch (kind) {
    case "state":
      return { kind, timestamp, state: decodeState(JSON.parse(new TextDecoder().decode(payload))) }
    case "log":
    case "runner_log":
      return { kind, timestamp, message: payload }
    case "end":
    case "heartbeat":
      return { kind, timestamp }
    default:
      throw new Error(`unknown event frame kind ${code} at byte ${at} of a chunk`)
  }
}

/**
 * The version of an event stream response's content type: `undefined` when it is not one
 * (an older runner answered with Server-Sent Events).
 */
export const eventStreamVersion = (contentType: string | null): number | undefined => {
  if (contentType === null || !contentType.toLowerCase().startsWith(EVENT_STREAM_TYPE)) return undefined
  const match = /version=(\d+)/i.exec(contentType)
  return match === null ? 0 : Number(match[1])
}
