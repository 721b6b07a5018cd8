// Records → Arrow (tableFromRecords, the one-pass builder): every kind of cell, nulls where
// they are hard (leading, trailing, all, a bitmap tail), mixed and unsupported values refused
// naming column and row, and each result read back through Arrow IPC by apache-arrow and by
// flechette (an independent implementation), so that hand-built buffers are checked by both.
import { describe, expect, it } from "@effect/vitest"
import * as flechette from "@uwdata/flechette"
import { Bool, Float64, tableFromIPC, tableToIPC, Utf8, vectorFromArray } from "apache-arrow"
import { Effect } from "effect"
import { arrow, tableFromRecords } from "../src/index.ts"
import { rowsOf } from "./support.ts"

const fieldsOf = (records: ReadonlyArray<Record<string, unknown>>) =>
  tableFromRecords(records).schema.fields.map((f) => `${f.name}: ${String(f.type)}`)

/** The rows after an IPC round trip, through apache-arrow and through flechette (the same). */
const roundTrip = (records: ReadonlyArray<Record<string, unknown>>) => {
  const ipc = tableToIPC(tableFromRecords(records), "stream")
  const viaArrow = rowsOf(tableFromIPC(ipc))
  const viaFlechette = flechette.tableFromIPC(ipc, { useDate: false, useBigInt: true }).toArray().map((r) => ({ ...r }))
  expect(viaFlechette).toEqual(viaArrow)
  return viaArrow
}

describe("tableFromRecords", () => {
  it("infers one Arrow type per column from its values", () => {
    const at = new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678))
    const records = [
      { n: 1, s: "a", b: true, big: 1n, d: at, bytes: new Uint8Array([1, 2]) },
      { n: 2.5, s: "b", b: false, big: -(2n ** 63n), d: new Date(-1000), bytes: new Uint8Array([]) }
    ]
    expect(fieldsOf(records)).toEqual([
      "n: Float64",
      "s: Utf8",
      "b: Bool",
      "big: Int64",
      "d: Timestamp<MILLISECOND>",
      "bytes: Binary"
    ])
    const rows = roundTrip(records)
    expect(rows[0]).toMatchObject({ n: 1, s: "a", b: true, big: 1n })
    expect(rows[1]).toMatchObject({ n: 2.5, s: "b", b: false, big: -(2n ** 63n) })
    expect(Number(rows[0].d)).toBe(at.getTime())
    expect(Number(rows[1].d)).toBe(-1000)
    expect([...(rows[0].bytes as Uint8Array)]).toEqual([1, 2])
    expect([...(rows[1].bytes as Uint8Array)]).toEqual([])
  })

  it("keeps nulls: leading, trailing, undefined, missing keys, and all-null columns (Utf8)", () => {
    const records: Array<Record<string, unknown>> = [
      { a: null, b: undefined, c: null, e: null },
      { a: null, b: "x", c: true, e: null },
      { a: 3, c: null, e: undefined },
      { a: 4, b: null, c: false, e: null, late: 1 }
    ]
    expect(fieldsOf(records)).toEqual(["a: Float64", "b: Utf8", "c: Bool", "e: Utf8", "late: Float64"])
    const table = tableFromRecords(records)
    expect(table.getChild("a")!.nullCount).toBe(2)
    expect(table.getChild("e")!.nullCount).toBe(4)
    expect(roundTrip(records)).toEqual([
      { a: null, b: null, c: null, e: null, late: null },
      { a: null, b: "x", c: true, e: null, late: null },
      { a: 3, b: null, c: null, e: null, late: null },
      { a: 4, b: null, c: false, e: null, late: 1 }
    ])
  })

  it("sets the validity bits right for every length around a byte boundary", () => {
    for (let n = 1; n <= 17; n++) {
      const records = Array.from({ length: n }, (_, i) => ({ v: i % 3 === 1 ? null : i, s: i % 2 === 0 ? `s${i}` : null, f: i % 4 === 0 ? null : i % 2 === 0 }))
      const expected = records.map((r) => ({ v: r.v, s: r.s, f: r.f }))
      expect(roundTrip(records)).toEqual(expected)
      const table = tableFromRecords(records)
      expect(table.getChild("v")!.nullCount).toBe(records.filter((r) => r.v === null).length)
    }
  })

  it("matches apache-arrow's own builder on the same values", () => {
    const xs = Array.from({ length: 1000 }, (_, i) => (i % 7 === 0 ? null : i / 3))
    const ss = Array.from({ length: 1000 }, (_, i) => (i % 5 === 0 ? null : `v${i}-${"é".repeat(i % 4)}`))
    const bs = Array.from({ length: 1000 }, (_, i) => (i % 11 === 0 ? null : i % 2 === 0))
    const records = xs.map((x, i) => ({ x, s: ss[i], b: bs[i] }))
    const mine = tableFromRecords(records)
    expect(rowsOf(mine)).toEqual(
      rowsOf(tableFromIPC(tableToIPC(tableFromIPC(tableToIPC(
        new (mine.constructor as typeof import("apache-arrow").Table)({
          x: vectorFromArray(xs, new Float64()),
          s: vectorFromArray(ss, new Utf8()),
          b: vectorFromArray(bs, new Bool())
        })
      )))))
    )
  })

  it("encodes any Unicode text as UTF-8, short and long, and tells empty strings from nulls", () => {
    const long = "x".repeat(100) + "ü" + "y".repeat(100)
    const records = [
      { s: "" },
      { s: null },
      { s: "plain" },
      { s: "Grüße" },
      { s: "日本語" },
      { s: "emoji 🎉 pair" },
      { s: long },
      { s: "a".repeat(10_000) },
      { s: "\u0000 nul" }
    ]
    expect(roundTrip(records).map((r) => r.s)).toEqual(records.map((r) => r.s))
  })

  it("grows its byte buffer past the first guess", () => {
    const records = Array.from({ length: 2000 }, (_, i) => ({ s: `${i}:`.padEnd(200 + (i % 50), "z") }))
    expect(roundTrip(records).map((r) => r.s)).toEqual(records.map((r) => r.s))
  })

  it("takes rows whose keys come in different orders, and columns in order of first appearance", () => {
    const records: Array<Record<string, unknown>> = [{ a: 1, b: "x" }, { b: "y", a: 2 }, { c: true, a: 3 }, { a: 4, b: "z", c: false }]
    expect(fieldsOf(records)).toEqual(["a: Float64", "b: Utf8", "c: Bool"])
    expect(roundTrip(records)).toEqual([
      { a: 1, b: "x", c: null },
      { a: 2, b: "y", c: null },
      { a: 3, b: null, c: true },
      { a: 4, b: "z", c: false }
    ])
  })

  it("refuses a column that mixes kinds, naming the column, the row and both kinds", () => {
    expect(() => tableFromRecords([{ a: 1 }, { a: null }, { a: "2" }])).toThrow('column "a" at row 2: mixes number and string values')
    expect(() => tableFromRecords([{ a: "x" }, { a: 2 }])).toThrow('column "a" at row 1: mixes string and number values')
    expect(() => tableFromRecords([{ a: true }, { a: 1 }])).toThrow('column "a" at row 1: mixes boolean and number values')
    expect(() => tableFromRecords([{ a: 1n }, { a: 1 }])).toThrow('column "a" at row 1: mixes bigint and number values')
    expect(() => tableFromRecords([{ a: new Date(0) }, { a: 0 }])).toThrow('column "a" at row 1: mixes date and number values')
    expect(() => tableFromRecords([{ a: null }, { a: 1 }, { a: new Uint8Array(1) }])).toThrow('column "a" at row 2: mixes number and bytes values')
  })

  it("refuses nested objects, arrays, invalid dates and bigints outside int64", () => {
    expect(() => tableFromRecords([{ a: 1, b: { deep: true } }])).toThrow('column "b" at row 0: cannot store an object')
    expect(() => tableFromRecords([{ b: "x" }, { b: { deep: true } }])).toThrow('column "b" at row 1: cannot store an object')
    expect(() => tableFromRecords([{ b: [1, 2] }])).toThrow('column "b" at row 0: cannot store an array')
    expect(() => tableFromRecords([{ d: new Date(0) }, { d: new Date("nope") }])).toThrow('column "d" at row 1: is an invalid Date')
    expect(() => tableFromRecords([{ v: 1n }, { v: 2n ** 63n }])).toThrow('column "v" at row 1: 9223372036854775808 does not fit in a 64-bit integer')
    expect(() => tableFromRecords([{ a: 1 }, 5 as unknown as Record<string, unknown>])).toThrow('column "*" at row 1: row is a number, not a record')
  })

  it.effect("the Arrow codec reports a refused column as Invalid naming it", () =>
    Effect.gen(function*() {
      const err = yield* Effect.flip(arrow.encode([{ a: 1 }, { a: 2 }, { a: "three" }]))
      expect(err.reason).toBe("Invalid")
      expect(err.message).toContain('column "a" at row 2: mixes number and string')
    }))

  it("handles many rows of the common shape (numbers and strings) exactly", () => {
    const n = 100_000
    const records = Array.from({ length: n }, (_, i) => ({ id: i, x: Math.sin(i), name: `row-${i % 1000}` }))
    const table = tableFromRecords(records)
    expect(table.numRows).toBe(n)
    const back = tableFromIPC(tableToIPC(table))
    for (const i of [0, 1, 999, 1000, 54_321, n - 1]) {
      expect(back.get(i)!.toJSON()).toEqual({ id: i, x: Math.sin(i), name: `row-${i % 1000}` })
    }
  })
})
