/**
 * Dataframes as CSV: CSV text is stored verbatim, tagged `text/csv`, with its schema and row
 * count in the metadata; decoding parses it (csv-parse) into an Arrow `Table`, inferring a
 * type per column.
 */
import { Codec, StackContentTypes } from "@dstack-ts/core"
import { Bool, Float64, Table, Utf8, type Vector, vectorFromArray } from "apache-arrow"
import { parse } from "csv-parse/sync"
import { Effect } from "effect"
import { describeTable } from "./internal/columns.ts"

const { ContentType } = StackContentTypes
const ID = "dataframe/csv"

export interface CsvOptions {
  /** Field delimiter (default `,`). */
  readonly delimiter?: string
}

/**
 * CSV text marked as a dataframe. A bare string is plain text to the AutoHandler, so CSV is
 * pushed wrapped: `push("sales", csv(text))`.
 */
export class Csv {
  readonly _tag = "Csv"
  constructor(readonly bytes: Uint8Array, readonly delimiter: string = ",") {}
}

/** Marks CSV text or bytes as a dataframe. */
export const csv = (data: string | Uint8Array, options: CsvOptions = {}): Csv =>
  new Csv(typeof data === "string" ? new TextEncoder().encode(data) : data, options.delimiter ?? ",")

const isCsv = (obj: unknown): obj is Csv =>
  obj instanceof Csv ||
  (typeof obj === "object" && obj !== null && (obj as Csv)._tag === "Csv" && (obj as Csv).bytes instanceof Uint8Array)

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/
const BOOLEAN = /^(true|false)$/i

/** A typed column from CSV cells: numbers, booleans or text; an empty cell is a null. */
const columnFromCells = (cells: ReadonlyArray<string>): Vector => {
  let numbers = true
  let booleans = true
  for (const c of cells) {
    if (c === "") continue
    if (numbers && !NUMBER.test(c)) numbers = false
    if (booleans && !BOOLEAN.test(c)) booleans = false
    if (!numbers && !booleans) break
  }
  const hasValue = cells.some((c) => c !== "")
  if (hasValue && numbers) return vectorFromArray(cells.map((c) => (c === "" ? null : Number(c))), new Float64())
  if (hasValue && booleans) return vectorFromArray(cells.map((c) => (c === "" ? null : c.toLowerCase() === "true")), new Bool())
  return vectorFromArray(cells.map((c) => (c === "" ? null : c)), new Utf8())
}

/** Parses CSV bytes (a header row, then records) into an Arrow table. */
export const readCsv = (method: string, bytes: Uint8Array, delimiter: string): Effect.Effect<Table, Codec.CodecError> =>
  Effect.gen(function*() {
    const text = yield* Codec.attempt(ID, method, "Invalid", "CSV is not valid UTF-8", () =>
      new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes))
    const rows = yield* Codec.attempt(ID, method, "Invalid", "malformed CSV", () =>
      parse(text, { delimiter, skip_empty_lines: true }) as Array<Array<string>>)
    if (rows.length === 0) return yield* Codec.fail(ID, method, "Invalid", "malformed CSV: no header row")
    const [header, ...records] = rows
    const dup = header.find((h, i) => header.indexOf(h) !== i)
    if (dup !== undefined) return yield* Codec.fail(ID, method, "Invalid", `malformed CSV: column "${dup}" appears twice in the header`)
    const columns: Record<string, Vector> = {}
    header.forEach((name, i) => {
      columns[name] = columnFromCells(records.map((r) => r[i]))
    })
    return new Table(columns)
  })

/** The CSV codec. */
export const csvCodec: Codec.Codec<Csv, Table> = Codec.make<Csv, Table>({
  plugin: "@dstack-ts/handler-dataframe",
  id: ID,
  application: StackContentTypes.Application.dataframe,
  contentTypes: [ContentType.csv],
  // A .tsv file is CSV with tabs; both are stored as text/csv with the delimiter in the metadata.
  fileTypes: [{ extensions: [".csv"] }, { extensions: [".tsv"] }],
  fromFile: (bytes, name) => csv(bytes, { delimiter: name.toLowerCase().endsWith(".tsv") ? "\t" : "," }),
  accepts: isCsv,
  encode: (obj) =>
    Effect.map(readCsv("encode", obj.bytes, obj.delimiter), (table) => ({
      contentType: `${ContentType.csv}; header=present`,
      application: StackContentTypes.Application.dataframe,
      metadata: { ...describeTable(table, "csv"), delimiter: obj.delimiter },
      body: obj.bytes
    })),
  decode: (encoded) =>
    Effect.flatMap(Codec.bytes(encoded.body), (bytes) => {
      const d = encoded.metadata.delimiter
      return readCsv("decode", bytes, typeof d === "string" && d.length > 0 ? d : ",")
    })
})
