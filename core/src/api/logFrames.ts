/**
 * The binary representation of `logs/stream`, negotiated by `Accept: application/x-dstack-ts-logs`
 * (a client that does not ask gets Server-Sent Events of JSON). Output travels as the bytes the
 * job wrote: no UTF-8 decode, JSON escaping and re-encode per megabyte on the server, no
 * JSON.parse on the client.
 *
 * A frame: the 16-byte record header (RecordHeader.ts: kind, payload length, timestamp) and the
 * payload. Kinds 0/1/2 carry output of the job's stdout,
 * stderr, or the runner's own log (`diagnose`); `end` carries the JSON of the SSE `end` event
 * (`{"status", "job_status"}`), `error` the JSON of its `error` event (`{"msg"}`).
 */
import { FrameAssembler } from "../internal/FrameAssembler.ts"
import { RECORD_HEADER, recordLength, recordTimestamp, writeRecordHeader } from "./RecordHeader.ts"
export const LOG_FRAMES_TYPE = "application/x-dstack-ts-logs"
export const LOG_FRAMES_VERSION = 1
export const LOG_FRAMES_CONTENT_TYPE = `${LOG_FRAMES_TYPE}; version=${LOG_FRAMES_VERSION}`

export const LOG_FRAME_HEADER = RECORD_HEADER

export type LogFrameKind = "stdout" | "stderr" | "runner" | "end" | "error"
export const LOG_FRAME_KINDS: ReadonlyArray<LogFrameKind> = ["stdout", "stderr", "runner", "end", "error"]
const CODES: Readonly<Record<LogFrameKind, number>> = { stdout: 0, stderr: 1, runner: 2, end: 3, error: 4 }

/** One decoded frame; `payload` is a view into the bytes received (copy it to keep it past the next push). */
export interface LogFrame {
  readonly kind: LogFrameKind
  readonly timestamp: number
  readonly payload: Uint8Array
}

/** Writes a frame's header at `pos` of the buffer `view` covers. */
export const writeLogFrameHeader = (view: DataView, pos: number, kind: LogFrameKind, length: number, timestamp: number): void =>
  writeRecordHeader(view, pos, CODES[kind], length, timestamp)

/** Encodes frames into one buffer. */
export const encodeLogFrames = (frames: ReadonlyArray<{ readonly kind: LogFrameKind; readonly timestamp: number; readonly payload: Uint8Array }>): Uint8Array => {
  let total = 0
  for (const f of frames) total += LOG_FRAME_HEADER + f.payload.byteLength
  const out = new Uint8Array(total)
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  let pos = 0
  for (const f of frames) {
    writeLogFrameHeader(view, pos, f.kind, f.payload.byteLength, f.timestamp)
    out.set(f.payload, pos + LOG_FRAME_HEADER)
    pos += LOG_FRAME_HEADER + f.payload.byteLength
  }
  return out
}

/**
 * Splits a byte stream into frames, whatever its chunking: `push` returns the frames the chunk
 * completes (views into the chunk where a frame lies whole in it). A frame that spans chunks is
 * copied, as its pieces arrive, into one buffer of its size made once its header is read, so no
 * chunk is held on to. A frame of an unknown kind is an error: a newer server speaking a format
 * this reader does not know must not be misread.
 */
export class LogFrameDecoder {
  private readonly frames = new FrameAssembler<LogFrame>({ headerBytes: LOG_FRAME_HEADER, lengthAt: frameLength, frameAt })

  push(chunk: Uint8Array): Array<LogFrame> {
    return this.frames.push(chunk)
  }

  /** Bytes of an incomplete frame held back; a stream that ends with some was cut short. */
  get pending(): number {
    return this.frames.pending
  }
}

/** The payload length of the frame whose header is at `pos`, after checking its kind. */
const frameLength = (buffer: Uint8Array, pos: number): number => {
  const code = buffer[pos]
  if (LOG_FRAME_KINDS[code] === undefined) throw new Error(`log stream: unknown frame kind ${code} at byte ${pos} (a newer server's format?)`)
  return recordLength(new DataView(buffer.buffer, buffer.byteOffset + pos, LOG_FRAME_HEADER), 0)
}

const frameAt = (buffer: Uint8Array, pos: number, length: number): LogFrame => ({
  kind: LOG_FRAME_KINDS[buffer[pos]],
  timestamp: recordTimestamp(new DataView(buffer.buffer, buffer.byteOffset + pos, LOG_FRAME_HEADER), 0),
  payload: buffer.subarray(pos + LOG_FRAME_HEADER, pos + LOG_FRAME_HEADER + length)
})

