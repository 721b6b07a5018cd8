// Shared by the dataframe tests: comparing tables by schema and values.
import type { Table } from "apache-arrow"

/** A table as plain data: field names with Arrow types, and rows as objects. */
export const tableData = (value: unknown): unknown => {
  const table = value as Table
  if (typeof table !== "object" || table === null || !("schema" in table)) return value
  return {
    fields: table.schema.fields.map((f) => `${f.name}: ${String(f.type)}`),
    rows: table.toArray().map((r) => ({ ...(r as { toJSON(): object }).toJSON() }))
  }
}

/** Rows only, for comparisons across writers whose type choices differ (Int64 vs Float64). */
export const rowsOf = (table: Table): Array<Record<string, unknown>> =>
  table.toArray().map((r) => ({ ...(r as { toJSON(): Record<string, unknown> }).toJSON() }))
