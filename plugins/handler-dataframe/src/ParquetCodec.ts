/**
 * Dataframes as Apache Parquet: Parquet files written elsewhere (stored as they are) and
 * Arrow tables or records written with hyparquet-writer. Decodes to an Arrow `Table`, read
 * with hyparquet (pure JavaScript, so it runs the same under Node and Deno).
 */
import { Codec, StackContentTypes } from "@dstack-ts/core"
import {
  Bool,
  type DataType,
  Float32,
  Float64,
  type Field,
  Int32,
  Int64,
  Precision,
  Table,
  Type,
  Utf8,
  type Vector,
  vectorFromArray
} from "apache-arrow"
import { Effect } from "effect"
import { type FileMetaData, parquetMetadata, parquetReadObjects, type SchemaElement } from "hyparquet"
import { type ColumnSource, parquetWriteBuffer } from "hyparquet-writer"
import { ColumnError, describeTable, isArrowTable, isRecordArray, tableFromRecords, vectorFromValues } from "./internal/columns.ts"

const { ContentType } = StackContentTypes
const ID = "dataframe/parquet"

/** What the Parquet codec encodes: Parquet file bytes, or a table or records to write. */
export type ParquetInput = Uint8Array | Table | ReadonlyArray<Record<string, unknown>>

const PAR1 = [0x50, 0x41, 0x52, 0x31]

/** A Parquet file: "PAR1" at both ends. */
export const isParquetFile = (b: Uint8Array): boolean =>
  b.length >= 12 && PAR1.every((m, i) => b[i] === m && b[b.length - 4 + i] === m)

const arrayBufferOf = (b: Uint8Array): ArrayBuffer =>
  b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer
    ? b.buffer
    : (b.slice().buffer as ArrayBuffer)

/** The Arrow type a flat Parquet column is read as; undefined where values decide (nested). */
const arrowTypeOf = (el: SchemaElement): DataType | undefined => {
  if (el.num_children) return undefined
  const logical = el.logical_type?.type
  const converted = el.converted_type
  // Dates, times, decimals and JSON come back from hyparquet as Dates, numbers and objects.
  if (logical === "DATE" || logical === "TIMESTAMP" || converted === "DATE" || converted?.startsWith("TIMESTAMP")) {
    return undefined
  }
  if (logical === "DECIMAL" || converted === "DECIMAL") return new Float64()
  switch (el.type) {
    case "BOOLEAN":
      return new Bool()
    case "INT32":
      return new Int32()
    case "INT64":
      return new Int64()
    case "FLOAT":
      return new Float32()
    case "DOUBLE":
      return new Float64()
    case "BYTE_ARRAY":
      return logical === "STRING" || logical === "ENUM" || converted === "UTF8" || converted === "ENUM"
        ? new Utf8()
        : undefined
    default:
      return undefined
  }
}

/** Top-level columns of a Parquet schema (the flattened list starts with the root). */
const topLevel = (schema: ReadonlyArray<SchemaElement>): Array<SchemaElement> => {
  const out: Array<SchemaElement> = []
  let i = 1
  const skip = (at: number): number => {
    let next = at + 1
    for (let c = 0; c < (schema[at].num_children ?? 0); c++) next = skip(next)
    return next
  }
  while (i < schema.length) {
    out.push(schema[i])
    i = skip(i)
  }
  return out
}

const describeParquet = (meta: FileMetaData): Codec.Metadata => {
  const columns = topLevel(meta.schema)
  return {
    format: "parquet",
    schema: columns.map((el) => ({
      name: el.name,
      type: String(arrowTypeOf(el) ?? el.logical_type?.type ?? el.converted_type ?? el.type ?? "STRUCT"),
      nullable: el.repetition_type !== "REQUIRED"
    })),
    row_count: Number(meta.num_rows),
    column_count: columns.length,
    ...(meta.created_by !== undefined ? { created_by: meta.created_by } : {})
  }
}

const readMetadata = (method: string, bytes: Uint8Array) =>
  isParquetFile(bytes)
    ? Codec.attempt(ID, method, "Invalid", "corrupt Parquet footer", () => parquetMetadata(arrayBufferOf(bytes)))
    : Codec.fail(ID, method, "Invalid", "not a Parquet file: the PAR1 magic is missing")

/** Reads a Parquet file into an Arrow table. */
export const readParquet = (method: string, bytes: Uint8Array): Effect.Effect<Table, Codec.CodecError> =>
  Effect.gen(function*() {
    const metadata = yield* readMetadata(method, bytes)
    const file = arrayBufferOf(bytes)
    const rows = yield* Codec.attemptPromise(ID, method, "Invalid", "corrupt Parquet data", () =>
      parquetReadObjects({ file, metadata }))
    return yield* Codec.attempt(ID, method, "Invalid", "cannot convert Parquet columns to Arrow", () => {
      const columns: Record<string, Vector> = {}
      for (const el of topLevel(metadata.schema)) {
        const values = rows.map((r) => r[el.name] ?? null)
        const type = arrowTypeOf(el)
        columns[el.name] = type === undefined
          ? vectorFromValues(el.name, values)
          : type instanceof Int32 || type instanceof Float32 || type instanceof Float64
          ? vectorFromArray(values.map((v) => (v === null ? null : Number(v))), type)
          : vectorFromArray(values, type)
      }
      return new Table(columns)
    })
  })

/** One Parquet column from an Arrow field; refuses Arrow types Parquet writing does not cover. */
const parquetColumn = (field: Field, vector: Vector): ColumnSource => {
  const t = field.type as DataType
  const name = field.name
  const noNulls = vector.nullCount === 0
  const values = (): Array<unknown> => Array.from(vector as Iterable<unknown>)
  switch (t.typeId) {
    case Type.Float: {
      const double = (t as Float64).precision === Precision.DOUBLE
      return { name, type: double ? "DOUBLE" : "FLOAT", data: (noNulls ? vector.toArray() : values()) as ColumnSource["data"] }
    }
    case Type.Int: {
      const { bitWidth, isSigned } = t as unknown as { bitWidth: number; isSigned: boolean }
      if (bitWidth === 64) return { name, type: "INT64", data: values() as ColumnSource["data"] }
      if (bitWidth < 32 || isSigned) return { name, type: "INT32", data: values() as ColumnSource["data"] }
      return { name, type: "INT64", data: values().map((v) => (v === null ? null : BigInt(v as number))) as ColumnSource["data"] }
    }
    case Type.Bool:
      return { name, type: "BOOLEAN", data: values() as ColumnSource["data"] }
    case Type.Utf8:
    case Type.LargeUtf8:
      return { name, type: "STRING", data: values() as ColumnSource["data"] }
    case Type.Dictionary:
      return { name, type: "STRING", data: values().map((v) => (v === null ? null : String(v))) as ColumnSource["data"] }
    case Type.Timestamp:
    case Type.Date:
      return {
        name,
        type: "TIMESTAMP",
        data: values().map((v) => (v === null ? null : new Date(Number(v)))) as ColumnSource["data"]
      }
    case Type.Binary:
      return { name, type: "BYTE_ARRAY", data: values() as ColumnSource["data"] }
    default:
      throw new ColumnError(name, undefined, `Arrow type ${String(t)} cannot be written to Parquet`)
  }
}

/** Writes an Arrow table as a Parquet file (snappy-compressed). */
export const writeParquet = (table: Table): Uint8Array => {
  const columnData = table.schema.fields.map((f, i) => parquetColumn(f, table.getChildAt(i)!))
  return new Uint8Array(parquetWriteBuffer({ columnData, createdBy: "dstack-ts handler-dataframe" }))
}

/** The Parquet codec: stores Parquet files verbatim and writes tables and records as Parquet. */
export const parquet: Codec.Codec<ParquetInput, Table> = Codec.make<ParquetInput, Table>({
  plugin: "@dstack-ts/handler-dataframe",
  id: ID,
  application: StackContentTypes.Application.dataframe,
  contentTypes: [ContentType.parquet],
  fileTypes: [{ extensions: [".parquet", ".pq"], magic: [{ bytes: "PAR1" }] }],
  accepts: (obj) => (obj instanceof Uint8Array ? isParquetFile(obj) : isArrowTable(obj) || isRecordArray(obj)),
  encode: (obj) =>
    Effect.gen(function*() {
      if (obj instanceof Uint8Array) {
        const meta = yield* readMetadata("encode", obj)
        return {
          contentType: ContentType.parquet,
          application: StackContentTypes.Application.dataframe,
          metadata: describeParquet(meta),
          body: obj
        }
      }
      const table = isArrowTable(obj)
        ? obj
        : yield* Codec.attempt(ID, "encode", "Invalid", "cannot convert records to an Arrow table", () =>
          tableFromRecords(obj as ReadonlyArray<Record<string, unknown>>))
      const body = yield* Effect.try({
        try: () => writeParquet(table),
        catch: (cause) =>
          new Codec.CodecError({
            module: ID,
            method: "encode",
            reason: cause instanceof ColumnError ? "Unsupported" : "Invalid",
            message: `cannot write the table as Parquet: ${cause instanceof Error ? cause.message : String(cause)}`,
            cause
          })
      })
      return {
        contentType: ContentType.parquet,
        application: StackContentTypes.Application.dataframe,
        metadata: { ...describeTable(table, "parquet"), created_by: "dstack-ts handler-dataframe" },
        body
      }
    }),
  decode: (encoded) => Effect.flatMap(Codec.bytes(encoded.body), (bytes) => readParquet("decode", bytes))
})
