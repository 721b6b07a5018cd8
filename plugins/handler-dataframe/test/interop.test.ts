// Interoperability with other Arrow, Parquet and CSV implementations: files written by DuckDB
// and by flechette (an independent Arrow implementation) are read, and what this plugin
// writes is read back by them. Also the AutoHandler's choices and the 1M-row encode time.
import { DuckDBInstance } from "@duckdb/node-api"
import { AutoHandler, Codec } from "@dstack-ts/core"
import { describe, expect, it } from "@effect/vitest"
import * as flechette from "@uwdata/flechette"
import { makeVector, type Table, tableFromArrays, vectorFromArray } from "apache-arrow"
import { Effect } from "effect"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import { arrow, codecs, csv, parquet } from "../src/index.ts"
import { rowsOf } from "./support.ts"

const dir = mkdtempSync(join(tmpdir(), "dstack-df-interop-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
const duck = await (await DuckDBInstance.create(":memory:")).connect()
const query = async (sql: string) => (await duck.runAndReadAll(sql)).getRowObjectsJS()
const auto = AutoHandler.make(codecs)

const decodeTable = (encoded: Codec.Encoded) => auto.decode(encoded) as Effect.Effect<Table, Codec.CodecError>

describe("Parquet written by DuckDB", () => {
  it.effect("keeps bigints, timestamps, dates, decimals and nulls, and names the writer", () =>
    Effect.gen(function*() {
      const file = join(dir, "typed.parquet")
      yield* Effect.promise(() =>
        duck.run(`COPY (SELECT * FROM (VALUES
            (1::BIGINT, TIMESTAMP '2024-01-02 03:04:05.678', DATE '2024-01-02', 12.34::DECIMAL(10,2), 'x'),
            (9007199254740993::BIGINT, NULL, NULL, NULL, NULL)) t(big, ts, d, dec, s))
          TO '${file}' (FORMAT parquet)`)
      )
      const encoded = yield* auto.encode(new Uint8Array(readFileSync(file)))
      expect(encoded.codec).toBe("dataframe/parquet")
      expect(encoded.metadata.row_count).toBe(2)
      expect(String(encoded.metadata.created_by)).toMatch(/DuckDB/)
      expect((encoded.metadata.schema as Array<{ name: string }>).map((f) => f.name)).toEqual(["big", "ts", "d", "dec", "s"])

      const rows = rowsOf(yield* decodeTable(encoded))
      expect(rows[0].big).toBe(1n)
      expect(rows[1].big).toBe(9007199254740993n) // beyond 2^53: must not pass through a double
      expect(rows[0].ts).toBe(Date.UTC(2024, 0, 2, 3, 4, 5, 678))
      expect(rows[0].d).toBe(Date.UTC(2024, 0, 2))
      expect(rows[0].dec).toBeCloseTo(12.34)
      expect(rows[0].s).toBe("x")
      expect(rows[1]).toEqual({ big: 9007199254740993n, ts: null, d: null, dec: null, s: null })
    }))

  it.effect("DuckDB reads back the Parquet this plugin writes, with the same values and types", () =>
    Effect.gen(function*() {
      const table = tableFromArrays({
        id: Int32Array.from([1, 2, 3]),
        score: Float64Array.from([0.5, -1.25, 1e10])
      })
      const withText = table.assign(tableFromArrays({ name: ["a", "b", "c"] }))
      const encoded = yield* auto.encode(withText, { encoder: parquet })
      expect(encoded.contentType).toBe("application/vnd.apache.parquet")
      const file = join(dir, "ours.parquet")
      writeFileSync(file, yield* Codec.bytes(encoded.body))
      const back = yield* Effect.promise(() => query(`SELECT * FROM '${file}' ORDER BY id`))
      expect(back).toEqual([
        { id: 1, score: 0.5, name: "a" },
        { id: 2, score: -1.25, name: "b" },
        { id: 3, score: 1e10, name: "c" }
      ])
      const types = yield* Effect.promise(() =>
        query(`SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '${file}')`)
      )
      expect(types).toEqual([
        { column_name: "id", column_type: "INTEGER" },
        { column_name: "score", column_type: "DOUBLE" },
        { column_name: "name", column_type: "VARCHAR" }
      ])
    }))

  it.effect("a column Parquet writing does not cover fails with Unsupported naming it", () =>
    Effect.gen(function*() {
      const nested = tableFromArrays({ ok: [1, 2] }).assign(
        tableFromArrays({ xs: [[1], [2]] } as unknown as Record<string, Array<number>>)
      )
      const err = yield* Effect.flip(parquet.encode(nested))
      expect(err.reason).toBe("Unsupported")
      expect(err.message).toContain('column "xs"')
    }))
})

describe("CSV written by DuckDB", () => {
  it.effect("decodes to the same rows DuckDB returns", () =>
    Effect.gen(function*() {
      const file = join(dir, "duck.csv")
      yield* Effect.promise(() =>
        duck.run(`COPY (SELECT i AS n, i * 0.25 AS q, 'say "hi", ' || i AS quote, i % 2 = 0 AS even FROM range(4) t(i))
                  TO '${file}' (FORMAT csv, HEADER)`)
      )
      const encoded = yield* auto.encode(csv(new Uint8Array(readFileSync(file))))
      expect(encoded.codec).toBe("dataframe/csv")
      expect(encoded.metadata.row_count).toBe(4)
      expect(encoded.metadata.schema).toEqual([
        { name: "n", type: "Float64", nullable: true },
        { name: "q", type: "Float64", nullable: true },
        { name: "quote", type: "Utf8", nullable: true },
        { name: "even", type: "Bool", nullable: true }
      ])
      const expected = yield* Effect.promise(() =>
        query(`SELECT i::DOUBLE AS n, i * 0.25 AS q, 'say "hi", ' || i AS quote, i % 2 = 0 AS even FROM range(4) t(i)`)
      )
      expect(rowsOf(yield* decodeTable(encoded))).toEqual(expected)
    }))
})

describe("Arrow IPC with flechette, an independent implementation", () => {
  const source = flechette.tableFromArrays(
    { id: Int32Array.from([1, 2, 3]), x: [1.5, null, 3.5], label: ["a", "b", null], ok: [true, false, true] },
    { types: { x: flechette.float64(), label: flechette.utf8(), ok: flechette.bool() } }
  )
  const expected = [
    { id: 1, x: 1.5, label: "a", ok: true },
    { id: 2, x: null, label: "b", ok: false },
    { id: 3, x: 3.5, label: null, ok: true }
  ]

  for (const format of ["stream", "file"] as const) {
    it.effect(`reads an IPC ${format} that flechette wrote`, () =>
      Effect.gen(function*() {
        const bytes = flechette.tableToIPC(source, { format })!
        const encoded = yield* auto.encode(bytes)
        expect(encoded.codec).toBe("dataframe/arrow")
        expect(encoded.contentType).toBe(`application/vnd.apache.arrow.${format}`)
        expect(encoded.metadata.row_count).toBe(3)
        expect(encoded.metadata.schema).toEqual([
          { name: "id", type: "Int32", nullable: true },
          { name: "x", type: "Float64", nullable: true },
          { name: "label", type: "Utf8", nullable: true },
          { name: "ok", type: "Bool", nullable: true }
        ])
        expect(rowsOf(yield* decodeTable(encoded))).toEqual(expected)
      }))
  }

  it.effect("flechette reads the IPC stream this plugin writes from records", () =>
    Effect.gen(function*() {
      const encoded = yield* auto.encode(expected)
      const back = flechette.tableFromIPC(yield* Codec.bytes(encoded.body))
      expect(back.toArray()).toEqual(expected.map((r) => ({ ...r, id: r.id })))
      expect(back.schema.fields.map((f) => f.name)).toEqual(["id", "x", "label", "ok"])
    }))
})

describe("records", () => {
  it.effect("a column mixing numbers and strings fails with Invalid naming column and row", () =>
    Effect.gen(function*() {
      const err = yield* Effect.flip(arrow.encode([{ a: 1 }, { a: 2 }, { a: "three" }]))
      expect(err.reason).toBe("Invalid")
      expect(err.message).toContain('column "a" at row 2: mixes number and string')
    }))

  it.effect("a nested object in a cell fails with Invalid naming the column", () =>
    Effect.gen(function*() {
      const err = yield* Effect.flip(arrow.encode([{ a: 1, b: { deep: true } }]))
      expect(err.reason).toBe("Invalid")
      expect(err.message).toContain('column "b" at row 0')
    }))
})

describe("AutoHandler with the dataframe codecs", () => {
  it.effect("picks a codec by the object and falls back to core for others", () =>
    Effect.gen(function*() {
      expect((yield* auto.encode([{ a: 1 }])).codec).toBe("dataframe/arrow")
      expect((yield* auto.encode(csv("a\n1\n"))).codec).toBe("dataframe/csv")
      expect((yield* auto.encode("a\n1\n")).codec).toBe("text/plain")
      expect((yield* auto.encode([1, 2])).codec).toBe("json/value")
      expect((yield* auto.encode(new Uint8Array([1, 2, 3]))).codec).toBe("bytes/octet-stream")
    }))

  it.effect("a client without the plugin is told which package decodes the payload", () =>
    Effect.gen(function*() {
      const encoded = yield* auto.encode([{ a: 1 }], { encoder: parquet })
      expect(encoded.metadata.plugin).toBe("@dstack-ts/handler-dataframe")
      const err = yield* Effect.flip(AutoHandler.make([]).decode(encoded))
      expect(err.reason).toBe("NotInstalled")
      expect(err.message).toContain("install the plugin @dstack-ts/handler-dataframe")
    }))
})

describe("encode performance", () => {
  it.effect("1M rows of three numeric columns (time is logged, not asserted)", () =>
    Effect.gen(function*() {
      const n = 1_000_000
      const a = new Float64Array(n)
      const b = new Float64Array(n)
      const c = new Int32Array(n)
      for (let i = 0; i < n; i++) {
        a[i] = i * 0.5
        b[i] = Math.sin(i)
        c[i] = i
      }
      const table = tableFromArrays({ a, b, c })
      let t0 = performance.now()
      const fromTable = yield* arrow.encode(table)
      const tableMs = performance.now() - t0
      expect(fromTable.metadata.row_count).toBe(n)

      const records = Array.from({ length: n }, (_, i) => ({ a: a[i], b: b[i], c: c[i] }))
      t0 = performance.now()
      const fromRecords = yield* arrow.encode(records)
      const recordsMs = performance.now() - t0
      expect(fromRecords.metadata.row_count).toBe(n)

      t0 = performance.now()
      const decoded = yield* arrow.decode({ ...fromTable, body: yield* Codec.bytes(fromTable.body) })
      const decodeMs = performance.now() - t0
      expect(decoded.numRows).toBe(n)
      expect(decoded.getChild("b")!.get(n - 1)).toBe(Math.sin(n - 1))
      console.log(
        `[handler-dataframe] 1M rows x 3 numeric columns: encode Arrow table ${tableMs.toFixed(1)} ms, ` +
          `encode records ${recordsMs.toFixed(1)} ms, decode ${decodeMs.toFixed(1)} ms ` +
          `(${((yield* Codec.bytes(fromTable.body)).length / 1e6).toFixed(1)} MB)`
      )
      // keep the makeVector import honest: a vector from a typed array has no copy and no nulls
      expect(makeVector(a).nullCount).toBe(0)
      expect(vectorFromArray([1, null]).nullCount).toBe(1)
    }))
})

describe("plugin descriptor", () => {
  it("is a plugin named after the package, contributing the three codecs in order", async () => {
    const { default: plugin, PLUGIN_NAME } = await import("../src/index.ts")
    const { isPlugin } = await import("@dstack-ts/core")
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"))
    expect(isPlugin(plugin)).toBe(true)
    expect(plugin.name).toBe(pkg.name)
    expect(PLUGIN_NAME).toBe(pkg.name)
    expect(plugin.version).toBe(pkg.version)
    expect(plugin.codecs?.map((c) => c.id)).toEqual(["dataframe/arrow", "dataframe/parquet", "dataframe/csv"])
  })
})
