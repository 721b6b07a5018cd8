/**
 * Building Arrow columns from plain JavaScript values (arrays of records, parsed CSV, rows read
 * from Parquet) and describing a table as JSON metadata.
 */
import {
  Binary,
  Bool,
  type DataType,
  Float64,
  Int64,
  makeVector,
  Table,
  TimestampMillisecond,
  Utf8,
  type Vector,
  vectorFromArray
} from "apache-arrow"
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

const typeOfKind = (kind: Kind): DataType => {
  switch (kind) {
    case "number":
      return new Float64()
    case "bigint":
      return new Int64()
    case "boolean":
      return new Bool()
    case "string":
      return new Utf8()
    case "date":
      return new TimestampMillisecond()
    case "bytes":
      return new Binary()
  }
}

/**
 * One Arrow vector from JavaScript values, its type inferred from the values: numbers become
 * Float64, bigints Int64, strings Utf8, Dates millisecond timestamps, bytes Binary; `null` and
 * `undefined` are nulls. A column that mixes kinds is refused rather than guessed at.
 */
export const vectorFromValues = (column: string, values: ReadonlyArray<unknown>): Vector => {
  let kind: Kind | undefined
  let nulls = 0
  for (let i = 0; i < values.length; i++) {
    const v = values[i]
    if (v === null || v === undefined) {
      nulls++
      continue
    }
    const k = kindOfValue(v)
    if (k === "other") throw new ColumnError(column, i, `cannot store ${describe(v)} in a dataframe column`)
    if (kind === undefined) kind = k
    else if (k !== kind) throw new ColumnError(column, i, `mixes ${kind} and ${k} values`)
  }
  // An all-null column has no kind to infer; Utf8 is what readers expect for "unknown".
  const type = typeOfKind(kind ?? "string")
  if (kind === "number" && nulls === 0) return makeVector(Float64Array.from(values as ReadonlyArray<number>))
  if (kind === "date") {
    return vectorFromArray(values.map((v) => (v instanceof Date ? v.getTime() : null)), type)
  }
  return vectorFromArray(values.map((v) => (v === undefined ? null : v)), type)
}

const describe = (v: unknown): string => {
  if (Array.isArray(v)) return "an array"
  if (typeof v === "object" && v !== null) return `an object (${JSON.stringify(v).slice(0, 40)})`
  return `a ${typeof v}`
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
 * The common case, done in one pass: every row has the same keys in the same order (records
 * made by one literal or one `map`). Numbers go straight into a Float64Array; a column meets a
 * non-number and becomes a plain array. `undefined` means "not uniform": use the general path.
 */
const uniformColumns = (records: ReadonlyArray<Record<string, unknown>>): Record<string, Vector> | undefined => {
  const n = records.length
  if (!isRecord(records[0])) return undefined
  const names = Object.keys(records[0])
  const m = names.length
  const numeric = names.map(() => new Float64Array(n))
  const generic: Array<Array<unknown> | undefined> = names.map(() => undefined)
  for (let i = 0; i < n; i++) {
    const r = records[i]
    if (!isRecord(r)) return undefined
    let j = 0
    for (const k in r) {
      if (j >= m || k !== names[j]) return undefined
      const v = r[k]
      const g = generic[j]
      if (g !== undefined) g[i] = v
      else if (typeof v === "number") numeric[j][i] = v
      else {
        const values = new Array<unknown>(n)
        for (let x = 0; x < i; x++) values[x] = numeric[j][x]
        values[i] = v
        generic[j] = values
      }
      j++
    }
    if (j !== m) return undefined
  }
  const columns: Record<string, Vector> = {}
  names.forEach((name, j) => {
    const g = generic[j]
    columns[name] = g === undefined ? makeVector(numeric[j]) : vectorFromValues(name, g)
  })
  return columns
}

/**
 * An Arrow table from records: one column per key, in order of first appearance; a key
 * missing from a row is a null there.
 */
export const tableFromRecords = (records: ReadonlyArray<Record<string, unknown>>): Table => {
  const uniform = uniformColumns(records)
  if (uniform !== undefined) return new Table(uniform)
  const n = records.length
  const names: Array<string> = []
  const seen = new Set<string>()
  for (let i = 0; i < n; i++) {
    const r = records[i]
    if (!isRecord(r)) throw new ColumnError("*", i, `row is ${describe(r)}, not a record`)
    for (const k in r) {
      if (!seen.has(k)) {
        seen.add(k)
        names.push(k)
      }
    }
  }
  const columns: Record<string, Vector> = {}
  for (const name of names) {
    const values = new Array<unknown>(n)
    for (let j = 0; j < n; j++) values[j] = records[j][name]
    columns[name] = vectorFromValues(name, values)
  }
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
