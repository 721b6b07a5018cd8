/**
 * Building Arrow columns from plain JavaScript values (arrays of records, parsed CSV, rows read
 * from Parquet) and describing a table as JSON metadata.
 */
import { Binary, Bool, Float64, Int64, makeData, makeVector, Table, TimestampMillisecond, Utf8, type Vector } from "apache-arrow"
import type { Codec } from "@dstack-ts/core"

/** A column that cannot become an Arrow vector: names the column, the row and the cause. */
export class ColumnError extends Error {
  constructor(readonly column: string, readonly row: number | undefined, detail: string) {
    super(`column "${column}"${row === undefined ? "" : ` at row ${row}`}: ${detail}`)
  }
}

type Kind = "number" | "bigint" | "boolean" | "string" | "date" | "bytes"

const kindOfValue = (v: unknown): Kind | "other" => {
  switch (typeof v) {
    case "number":
      return "number"
    case "bigint":
      return "bigint"
    case "boolean":
      return "boolean"
    case "string":
      return "string"
    default:
      if (v instanceof Date) return "date"
      if (v instanceof Uint8Array) return "bytes"
      return "other"
  }
}

const describe = (v: unknown): string => {
  if (Array.isArray(v)) return "an array"
  if (typeof v === "object" && v !== null) return `an object (${JSON.stringify(v).slice(0, 40)})`
  return `a ${typeof v}`
}

/** The error for the value at row `i` of a column of `kind` that is not of that kind. */
const misfit = (column: string, i: number, kind: Kind, v: unknown): ColumnError => {
  const k = kindOfValue(v)
  return new ColumnError(column, i, k === "other" ? `cannot store ${describe(v)} in a dataframe column` : `mixes ${kind} and ${k} values`)
}

// Arrow's Utf8 and Binary offsets are 32-bit: one column holds at most 2 GiB of bytes.
const MAX_OFFSET = 2 ** 31 - 1
const INT64_MIN = -(2n ** 63n)
const INT64_MAX = 2n ** 63n - 1n

/**
 * The validity bitmap of a column (bit set = a value), made on the first null: a column
 * without nulls has none, as Arrow expects.
 */
class Validity {
  bitmap: Uint8Array | undefined = undefined
  count = 0
  constructor(readonly length: number) {}
  null(i: number): void {
    if (this.bitmap === undefined) {
      this.bitmap = new Uint8Array((this.length + 7) >> 3).fill(0xff)
      // bits past the last row stay clear
      const tail = this.length & 7
      if (tail !== 0) this.bitmap[this.bitmap.length - 1] = (1 << tail) - 1
    }
    this.bitmap[i >> 3] &= ~(1 << (i & 7))
    this.count++
  }
  props(): { nullCount: number; nullBitmap?: Uint8Array } {
    return this.bitmap === undefined ? { nullCount: 0 } : { nullCount: this.count, nullBitmap: this.bitmap }
  }
}

const utf8 = new TextEncoder()

/** UTF-8 bytes of many strings in one growing buffer. ASCII is copied by hand (most cells are short). */
class ByteSink {
  buf: Uint8Array
  at = 0
  constructor(capacity: number) {
    this.buf = new Uint8Array(Math.max(64, capacity))
  }
  reserve(extra: number): void {
    const need = this.at + extra
    if (need <= this.buf.length) return
    const next = new Uint8Array(Math.max(need, this.buf.length * 2))
    next.set(this.buf.subarray(0, this.at))
    this.buf = next
  }
  string(s: string): void {
    const len = s.length
    this.reserve(len * 3)
    const buf = this.buf
    const at = this.at
    if (len <= 64) {
      let k = 0
      for (; k < len; k++) {
        const c = s.charCodeAt(k)
        if (c >= 0x80) break
        buf[at + k] = c
      }
      if (k === len) {
        this.at = at + len
        return
      }
    }
    this.at = at + utf8.encodeInto(s, buf.subarray(at)).written
  }
  bytes(b: Uint8Array): void {
    this.reserve(b.length)
    this.buf.set(b, this.at)
    this.at += b.length
  }
}

/**
 * One Arrow vector from JavaScript values, built in one pass into typed arrays. The type is
 * that of the first non-null value: numbers become Float64, bigints Int64, strings Utf8, Dates
 * millisecond timestamps, booleans Bool, bytes Binary; `null` and `undefined` are nulls. A
 * column that mixes kinds (or holds objects, arrays, invalid Dates, bigints outside int64) is
 * refused with an error naming the column and the row, rather than guessed at.
 */
export const vectorFromValues = (column: string, values: ReadonlyArray<unknown>): Vector =>
  buildColumn(column, values.length, values, undefined)

/**
 * The builder behind `vectorFromValues` and `tableFromRecords`: reads cell `i` from `values`,
 * or else from `rows[i][column]` (so that record columns are never copied into an array of
 * boxed values first).
 */
const buildColumn = (
  column: string,
  n: number,
  values: ReadonlyArray<unknown> | undefined,
  rows: ReadonlyArray<Record<string, unknown>> | undefined
): Vector => {
  const at = values !== undefined ? (i: number) => values[i] : (i: number) => rows![i][column]
  const valid = new Validity(n)
  let first = 0
  while (first < n && (at(first) === null || at(first) === undefined)) valid.null(first++)
  if (first === n) {
    // An all-null column has no kind to infer; Utf8 is what readers expect for "unknown".
    return makeVector(makeData({ type: new Utf8(), length: n, valueOffsets: new Int32Array(n + 1), data: new Uint8Array(0), ...valid.props() }))
  }
  const kind = kindOfValue(at(first))
  if (kind === "other") throw misfit(column, first, "number", at(first))
  switch (kind) {
    case "number": {
      const data = new Float64Array(n)
      for (let i = first; i < n; i++) {
        const v = values !== undefined ? values[i] : rows![i][column]
        if (typeof v === "number") data[i] = v
        else if (v === null || v === undefined) valid.null(i)
        else throw misfit(column, i, kind, v)
      }
      return makeVector(makeData({ type: new Float64(), length: n, data, ...valid.props() }))
    }
    case "boolean": {
      const data = new Uint8Array((n + 7) >> 3)
      for (let i = first; i < n; i++) {
        const v = values !== undefined ? values[i] : rows![i][column]
        if (v === true) data[i >> 3] |= 1 << (i & 7)
        else if (v === false) continue
        else if (v === null || v === undefined) valid.null(i)
        else throw misfit(column, i, kind, v)
      }
      return makeVector(makeData({ type: new Bool(), length: n, data, ...valid.props() }))
    }
    case "bigint": {
      const data = new BigInt64Array(n)
      for (let i = first; i < n; i++) {
        const v = values !== undefined ? values[i] : rows![i][column]
        if (typeof v === "bigint") {
          if (v < INT64_MIN || v > INT64_MAX) throw new ColumnError(column, i, `${v} does not fit in a 64-bit integer`)
          data[i] = v
        } else if (v === null || v === undefined) valid.null(i)
        else throw misfit(column, i, kind, v)
      }
      return makeVector(makeData({ type: new Int64(), length: n, data, ...valid.props() }))
    }
    case "date": {
      const data = new BigInt64Array(n)
      for (let i = first; i < n; i++) {
        const v = values !== undefined ? values[i] : rows![i][column]
        if (v instanceof Date) {
          const ms = v.getTime()
          if (Number.isNaN(ms)) throw new ColumnError(column, i, "is an invalid Date")
          data[i] = BigInt(ms)
        } else if (v === null || v === undefined) valid.null(i)
        else throw misfit(column, i, kind, v)
      }
      return makeVector(makeData({ type: new TimestampMillisecond(), length: n, data, ...valid.props() }))
    }
    case "string":
    case "bytes": {
      const valueOffsets = new Int32Array(n + 1)
      const sink = new ByteSink(kind === "string" ? (n - first) * 8 : 1024)
      for (let i = first; i < n; i++) {
        const v = values !== undefined ? values[i] : rows![i][column]
        if (kind === "string" && typeof v === "string") sink.string(v)
        else if (kind === "bytes" && v instanceof Uint8Array) sink.bytes(v)
        else if (v === null || v === undefined) valid.null(i)
        else throw misfit(column, i, kind, v)
        if (sink.at > MAX_OFFSET) throw new ColumnError(column, i, "holds more than 2 GiB of data, the most one Arrow column can")
        valueOffsets[i + 1] = sink.at
      }
      const data = sink.buf.subarray(0, sink.at)
      return kind === "string"
        ? makeVector(makeData({ type: new Utf8(), length: n, valueOffsets, data, ...valid.props() }))
        : makeVector(makeData({ type: new Binary(), length: n, valueOffsets, data, ...valid.props() }))
    }
  }
}

/** Is `obj` a plain object (a record)? */
export const isRecord = (obj: unknown): obj is Record<string, unknown> => {
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) return false
  const proto = Object.getPrototypeOf(obj)
  return proto === Object.prototype || proto === null
}

/** Is `obj` a non-empty array of records (checking at most the first 1,000 rows)? */
export const isRecordArray = (obj: unknown): obj is ReadonlyArray<Record<string, unknown>> => {
  if (!Array.isArray(obj) || obj.length === 0) return false
  const n = Math.min(obj.length, 1000)
  for (let i = 0; i < n; i++) if (!isRecord(obj[i])) return false
  return true
}

/**
 * The column names of records, in order of first appearance. Rows made by one literal or one
 * `map` have the first row's keys in the same order, which is checked without allocating.
 */
const columnNames = (records: ReadonlyArray<Record<string, unknown>>): Array<string> => {
  const names: Array<string> = []
  let seen: Set<string> | undefined
  const n = records.length
  for (let i = 0; i < n; i++) {
    const r = records[i]
    if (!isRecord(r)) throw new ColumnError("*", i, `row is ${describe(r)}, not a record`)
    let j = 0
    for (const k in r) {
      if (j < names.length && names[j] === k) {
        j++
        continue
      }
      if (seen === undefined) seen = new Set(names)
      if (!seen.has(k)) {
        seen.add(k)
        names.push(k)
      }
      // keys out of the first row's order: compare by set from here on in this row
      j = Number.MAX_SAFE_INTEGER
    }
  }
  return names
}

/**
 * An Arrow table from records: one column per key, in order of first appearance; a key
 * missing from a row is a null there. Each column is read out of the rows once and built
 * into typed arrays in one pass (see `vectorFromValues` for the types).
 */
export const tableFromRecords = (records: ReadonlyArray<Record<string, unknown>>): Table => {
  const names = columnNames(records)
  const n = records.length
  const columns: Record<string, Vector> = {}
  for (const name of names) columns[name] = buildColumn(name, n, undefined, records)
  return new Table(columns)
}

/** Duck-typed check too, so a table built by another copy of apache-arrow is recognised. */
export const isArrowTable = (obj: unknown): obj is Table =>
  obj instanceof Table ||
  (typeof obj === "object" && obj !== null && (obj as { [Symbol.toStringTag]?: string })[Symbol.toStringTag] === "Table" &&
    "schema" in obj && "batches" in obj)

/** The JSON metadata of a table: its schema (field names and Arrow types) and row count. */
export const describeTable = (table: Table, format: string): Codec.Metadata => ({
  format,
  schema: table.schema.fields.map((f) => ({ name: f.name, type: String(f.type), nullable: f.nullable })),
  row_count: table.numRows,
  column_count: table.numCols
})
