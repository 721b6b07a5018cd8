/**
 * Building statements and reading values for the SQL state store's table modules: parameters
 * numbered as they are added, WHERE clauses, and the conversions between column values and
 * TypeScript (timestamps, JSON) that every driver needs alike.
 */

/** The parameters of one statement, numbered `$1`, `$2`, … in the order they are added. */
export class Params {
  readonly values: Array<unknown> = []
  add(v: unknown): string {
    this.values.push(v)
    return `$${this.values.length}`
  }
}

export const whereSql = (clauses: ReadonlyArray<string>): string =>
  clauses.length === 0 ? "" : `WHERE ${clauses.join(" AND ")}`

/** A timestamptz column: a Date from drivers that parse it, a string from those that do not. */
export const toDate = (v: unknown): Date => (v instanceof Date ? v : new Date(String(v)))
export const iso = (d: Date | undefined): string | null => (d === undefined ? null : d.toISOString())
/**
 * A value for a jsonb parameter: its JSON text (`undefined` is stored as JSON null). A statement
 * casts it as `$n::text::jsonb`, never `$n::jsonb` alone: the parameter is then text, which every
 * driver sends as it is, and the database reads the JSON once. Typed jsonb, the `postgres` driver
 * encodes the value as JSON once more, and the column would hold a JSON string of the text
 * (migration 9 undid that). Both drivers give jsonb columns back parsed: rows are read as they come.
 */
export const json = (v: unknown): string => JSON.stringify(v === undefined ? null : v)
