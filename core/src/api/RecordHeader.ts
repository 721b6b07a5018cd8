/**
 * The 16-byte header in front of every output record dstack-ts stores or sends: the runner's
 * event log and event stream, the server's log files and the binary `logs/stream` frames all
 * lay records out the same way, so a stored page can go on the wire as it lies on disk.
 *
 * Layout (little endian): u8 kind, u8 0, u16 0, u32 payload length, f64 timestamp in epoch
 * milliseconds; the payload follows. What a kind code means is the format's own (log frames:
 * stdout 0, stderr 1, runner 2, end 3, error 4).
 */

/** The header's size in bytes. */
export const RECORD_HEADER = 16

/** One record's header. */
export interface RecordHeader {
  readonly kind: number
  readonly length: number
  readonly timestamp: number
}

/** Writes a header at `pos` of the bytes `view` covers. */
export const writeRecordHeader = (view: DataView, pos: number, kind: number, length: number, timestamp: number): void => {
  view.setUint8(pos, kind)
  view.setUint8(pos + 1, 0)
  view.setUint16(pos + 2, 0, true)
  view.setUint32(pos + 4, length, true)
  view.setFloat64(pos + 8, timestamp, true)
}

/** The kind code of the header at `pos`. */
export const recordKind = (view: DataView, pos: number): number => view.getUint8(pos)
/** The payload length of the header at `pos`. */
export const recordLength = (view: DataView, pos: number): number => view.getUint32(pos + 4, true)
/** The timestamp (epoch ms) of the header at `pos`. */
export const recordTimestamp = (view: DataView, pos: number): number => view.getFloat64(pos + 8, true)

/** Reads the header at `pos`. */
export const readRecordHeader = (view: DataView, pos: number): RecordHeader => ({
  kind: recordKind(view, pos),
  length: recordLength(view, pos),
  timestamp: recordTimestamp(view, pos)
})

/** A DataView over exactly the bytes of `bytes` (a Buffer may be a slice of a larger pool). */
export const viewOf = (bytes: Uint8Array): DataView => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
