// Codec conformance for the Arrow, Parquet and CSV codecs, with samples written by this
// plugin and by DuckDB.
import { DuckDBInstance } from "@duckdb/node-api"
import { testCodec } from "@dstack-ts/core/testing"
import { Bool, Float64, Int32, tableFromArrays, tableFromIPC, tableToIPC, Utf8, vectorFromArray, Table } from "apache-arrow"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { arrow, csv, csvCodec, parquet, tableFromRecords, writeParquet } from "../src/index.ts"
import { tableData } from "./support.ts"

const enc = new TextEncoder()

const mixed = new Table({
  x: vectorFromArray([1.5, -2, null], new Float64()),
  n: vectorFromArray([1, 2, 3], new Int32()),
  s: vectorFromArray(["a", null, "c"], new Utf8()),
  b: vectorFromArray([true, false, null], new Bool())
})
const dictionary = tableFromArrays({ v: new Float64Array([1, 2, 3]), label: ["a", "b", "a"] })
const records = [{ a: 1, b: "x", c: true }, { a: 2.5, b: null, c: false }, { a: 3, c: true }]
const dated = [{ at: new Date(Date.UTC(2024, 0, 2)), v: 1n }, { at: null, v: 2n }]

// A Parquet file written by DuckDB, another implementation, in a temporary directory.
const dir = mkdtempSync(join(tmpdir(), "dstack-df-"))
const duck = await (await DuckDBInstance.create(":memory:")).connect()
await duck.run(
  `COPY (SELECT i::INTEGER AS id, i * 0.5 AS half, 'row ' || i AS label, i % 2 = 0 AS even
         FROM range(5) t(i)) TO '${join(dir, "duck.parquet")}' (FORMAT parquet)`
)
const duckParquet = new Uint8Array(readFileSync(join(dir, "duck.parquet")))
rmSync(dir, { recursive: true, force: true })
const duckExpected = new Table({
  id: vectorFromArray([0, 1, 2, 3, 4], new Int32()),
  half: vectorFromArray([0, 0.5, 1, 1.5, 2], new Float64()),
  label: vectorFromArray(["row 0", "row 1", "row 2", "row 3", "row 4"], new Utf8()),
  even: vectorFromArray([true, false, true, false, true], new Bool())
})

const arrowStream = tableToIPC(mixed, "stream")

testCodec("dataframe/arrow", arrow, {
  accepted: [
    { name: "an Arrow table with nulls", value: mixed },
    { name: "a table with dictionary strings", value: dictionary },
    { name: "an array of records", value: records, decoded: tableFromRecords(records) },
    { name: "records with dates and bigints", value: dated, decoded: tableFromRecords(dated) },
    { name: "Arrow IPC stream bytes", value: arrowStream, decoded: mixed },
    { name: "Arrow IPC file bytes", value: tableToIPC(dictionary, "file"), decoded: dictionary },
    { name: "a table asked for as an IPC file", value: mixed, options: { contentType: "application/vnd.apache.arrow.file" } }
  ],
  rejected: [
    { name: "an empty array", value: [] },
    { name: "an array of numbers", value: [1, 2, 3] },
    { name: "a string", value: "a,b\n1,2" },
    { name: "CSV", value: csv("a\n1") },
    { name: "Parquet bytes", value: duckParquet },
    { name: "random bytes", value: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]) }
  ],
  corrupt: [
    { name: "a truncated IPC stream", body: arrowStream.slice(0, 60) },
    { name: "a continuation marker and nothing else", body: new Uint8Array([255, 255, 255, 255, 0, 0, 0, 0]) },
    { name: "bytes without the file magic", body: enc.encode("ARROW0 not really"), contentType: "application/vnd.apache.arrow.file" }
  ],
  normalize: tableData
})

testCodec("dataframe/parquet", parquet, {
  accepted: [
    { name: "a Parquet file written by DuckDB", value: duckParquet, decoded: duckExpected },
    { name: "an Arrow table", value: mixed },
    { name: "an array of records", value: records, decoded: tableFromRecords(records) },
    { name: "a Parquet file written by this plugin", value: writeParquet(mixed), decoded: mixed }
  ],
  rejected: [
    { name: "Arrow IPC bytes", value: arrowStream },
    { name: "a string", value: "PAR1" },
    { name: "CSV", value: csv("a\n1") },
    { name: "a single record", value: { a: 1 } }
  ],
  corrupt: [
    { name: "bytes without PAR1", body: enc.encode("not parquet at all") },
    { name: "PAR1 around garbage", body: enc.encode("PAR1 garbage in the middle \u0010\u0000\u0000\u0000PAR1") },
    { name: "a truncated DuckDB file", body: duckParquet.slice(0, duckParquet.length - 9) }
  ],
  normalize: tableData
})

testCodec("dataframe/csv", csvCodec, {
  accepted: [
    {
      name: "numbers, text and booleans with empty cells",
      value: csv("a,b,c\n1,x,true\n2.5,,FALSE\n"),
      decoded: new Table({
        a: vectorFromArray([1, 2.5], new Float64()),
        b: vectorFromArray(["x", null], new Utf8()),
        c: vectorFromArray([true, false], new Bool())
      })
    },
    {
      name: "quoted fields with delimiters and newlines",
      value: csv('name,note\n"Smith, J","line 1\nline 2"\n'),
      decoded: tableFromArrays({ name: ["Smith, J"], note: ["line 1\nline 2"] })
    },
    {
      name: "semicolon-separated bytes",
      value: csv(enc.encode("k;v\na;1e3\n"), { delimiter: ";" }),
      decoded: new Table({ k: vectorFromArray(["a"], new Utf8()), v: vectorFromArray([1000], new Float64()) })
    }
  ],
  rejected: [
    { name: "a bare string", value: "a,b\n1,2" },
    { name: "an Arrow table", value: mixed },
    { name: "bytes", value: enc.encode("a,b\n1,2") }
  ],
  corrupt: [
    { name: "an unclosed quote", body: enc.encode('a,b\n"1,2\n') },
    { name: "a row with too many fields", body: enc.encode("a,b\n1,2,3\n") },
    { name: "invalid UTF-8", body: new Uint8Array([0x61, 0x0a, 0xff, 0xfe, 0x0a]) },
    { name: "a repeated header", body: enc.encode("a,a\n1,2\n") }
  ],
  normalize: (v) => {
    const t = tableData(v) as { fields: Array<string>; rows: unknown }
    // tableFromArrays makes dictionary-encoded strings: compare values, and types by name only.
    return { fields: t.fields.map((f) => f.replace("Dictionary<Int32, Utf8>", "Utf8")), rows: t.rows }
  }
})

// Guard against a sample silently meaning nothing: the IPC stream above really is Arrow.
if (tableFromIPC(arrowStream).numRows !== 3) throw new Error("sample table did not serialise")
