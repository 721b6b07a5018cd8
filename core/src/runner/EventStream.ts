/**
 * The runner's binary event stream (`GET /logs_stream` with `Accept: application/x-dstack-ts-events`):
 * the same events as the Server-Sent Events feed, as length-prefixed frames, so that job output
 * travels as raw bytes — no base64, no JSON, no per-line parsing on either side. A server that
 * asks for it and gets `text/event-stream` back talks to an older runner and reads SSE instead.
 *
 * A frame: a 16-byte header (u8 kind, u8 0, u16 0, u32 payload length, f64 timestamp in epoch
 * milliseconds; little endian), then the payload: the output bytes for `log`/`runner_log`, the
 * JSON of the state event for `state` (the pull wire format), nothing for `end` (whose
 * timestamp is the stream's last cursor).
 */
import { Buffer } from "node:buffer"
import { Schema } from "effect"
import { JobStateEvent } from "./RunnerProtocol.ts"

/** The media type of the stream; `version` changes whenever frames change incompatibly. */
export const EVENT_STREAM_TYPE = "application/x-dstack-ts-events"
export const EVENT_STREAM_VERSION = 1
export const EVENT_STREAM_CONTENT_TYPE = `${EVENT_STREAM_TYPE}; version=${EVENT_STREAM_VERSION}`

export const FRAME_HEADER = 16

export type StreamEventKind = "state" | "log" | "runner_log" | "end"
const KIND_CODES: Readonly<Record<StreamEventKind, number>> = { state: 1, log: 2, runner_log: 3, end: 4 }
const KINDS: ReadonlyArray<StreamEventKind | undefined> = [undefined, "state", "log", "runner_log", "end"]

/** One event of the stream, in the order the runner recorded them. */
export type StreamEvent =
  | { readonly kind: "state"; readonly timestamp: number; readonly state: JobStateEvent }
  | { readonly kind: "log" | "runner_log"; readonly timestamp: number; readonly message: Uint8Array }
  | { readonly kind: "end"; readonly timestamp: number }

const encodeState = Schema.encodeSync(JobStateEvent)
const decodeState = Schema.decodeUnknownSync(JobStateEvent)
const utf8 = new TextEncoder()

/** Encodes events as frames into one buffer. */
export const encodeFrames = (events: ReadonlyArray<StreamEvent>): Uint8Array => {
  const payloads: Array<Uint8Array | undefined> = []
  let total = 0
  for (const event of events) {
    const payload = event.kind === "state" ? utf8.encode(JSON.stringify(encodeState(event.state))) : event.kind === "end" ? undefined : event.message
    payloads.push(payload)
    total += FRAME_HEADER + (payload?.byteLength ?? 0)
  }
  const out = new Uint8Array(total)
  const view = new DataView(out.buffer)
  let pos = 0
  for (let i = 0; i < events.length; i++) {
    const payload = payloads[i]
    const length = payload?.byteLength ?? 0
    view.setUint8(pos, KIND_CODES[events[i].kind])
    view.setUint32(pos + 4, length, true)
    view.setFloat64(pos + 8, events[i].timestamp, true)
    if (payload !== undefined) out.set(payload, pos + FRAME_HEADER)
    pos += FRAME_HEADER + length
  }
  return out
}

/**
 * Splits a byte stream into events, whatever its chunking: `push` returns the events the
 * chunk completes. A frame of an unknown kind is an error (a newer runner speaking a protocol
 * this reader does not know must not be misread).
 */
export class FrameDecoder {
  private pending: Array<Uint8Array> = []
  private pendingBytes = 0
  /** Bytes the held-back frame needs before it can be decoded (its header, then all of it). */
  private need = 0

  push(chunk: Uint8Array): Array<StreamEvent> {
    let buffer = chunk
    if (this.pendingBytes > 0) {
      // A big frame arrives in many chunks: join them once, when it is complete.
      if (this.pendingBytes + chunk.byteLength < this.need) {
        this.pending.push(chunk)
        this.pendingBytes += chunk.byteLength
        return []
      }
      this.pending.push(chunk)
      buffer = concat(this.pending, this.pendingBytes + chunk.byteLength)
      this.pending = []
      this.pendingBytes = 0
    }
    const events: Array<StreamEvent> = []
    const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength)
    let pos = 0
    while (pos + FRAME_HEADER <= buffer.byteLength) {
      const code = view.getUint8(pos)
      const length = view.getUint32(pos + 4, true)
      if (pos + FRAME_HEADER + length > buffer.byteLength) break
      const timestamp = view.getFloat64(pos + 8, true)
      const kind = KINDS[code]
      const payload = buffer.subarray(pos + FRAME_HEADER, pos + FRAME_HEADER + length)
      switch (kind) {
        case "state":
          events.push({ kind, timestamp, state: decodeState(JSON.parse(new TextDecoder().decode(payload))) })
          break
        case "log":
        case "runner_log":
          events.push({ kind, timestamp, message: payload })
          break
        case "end":
          events.push({ kind, timestamp })
          break
        default:
          throw new Error(`unknown event frame kind ${code} at byte ${pos} of a chunk`)
      }
      pos += FRAME_HEADER + length
    }
    if (pos < buffer.byteLength) {
      // Keep the partial frame; copy it off a chunk its payload views must not pin.
      const rest = copyOf(buffer.subarray(pos))
      this.pending.push(rest)
      this.pendingBytes = rest.byteLength
      this.need = rest.byteLength < FRAME_HEADER ? FRAME_HEADER : FRAME_HEADER + view.getUint32(pos + 4, true)
    }
    return events
  }

  /** Bytes of an unfinished frame held back (non-zero at the end of a stream means it was cut). */
  get buffered(): number {
    return this.pendingBytes
  }
}

/**
 * Joins chunks into a new buffer. Not zero-filled first (every byte is written): a frame of a
 * megabyte of output is joined this way for each megabyte that passes, and zeroing it first
 * cost as much as the copy.
 */
const concat = (chunks: ReadonlyArray<Uint8Array>, size: number): Uint8Array => {
  const out = Buffer.allocUnsafe(size)
  let offset = 0
  for (const chunk of chunks) {
    out.set(chunk, offset)
    offset += chunk.byteLength
  }
  return out
}

const copyOf = (bytes: Uint8Array): Uint8Array => concat([bytes], bytes.byteLength)

/**
 * The version of an event stream response's content type: `undefined` when it is not one
 * (an older runner answered with Server-Sent Events).
 */
export const eventStreamVersion = (contentType: string | null): number | undefined => {
  if (contentType === null || !contentType.toLowerCase().startsWith(EVENT_STREAM_TYPE)) return undefined
  const match = /version=(\d+)/i.exec(contentType)
  return match === null ? 0 : Number(match[1])
}
