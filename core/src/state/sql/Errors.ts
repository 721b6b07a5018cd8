/**
 * How the SQL state store's failures become `StateStoreError`s: a driver's SQLSTATE mapped to
 * a reason once, here at the boundary, and the store's own refusals (bad input, missing rows,
 * stored rows it cannot read).
 */
import { Effect, Schema } from "effect"
import { StateStoreError, type StateStoreErrorReason } from "../../ports/StateStore.ts"
import type { SqlError } from "../SqlDriver.ts"

/** The `module` of every error this store raises. */
export const MODULE = "StateStore"

const reasonOf = (e: SqlError): StateStoreErrorReason => {
  const code = e.code ?? ""
  if (code === "23505") return "AlreadyExists"
  if (code === "23503") return "NotFound"
  if (code === "40001" || code === "40P01" || code === "55P03") return "Conflict"
  if (code.startsWith("22") || code.startsWith("23")) return "Invalid"
  if (code.startsWith("08") || code.startsWith("53") || code.startsWith("57")) return "Unavailable"
  if (/ECONNREFUSED|ECONNRESET|CONNECTION_|closed|terminat/i.test(e.message)) return "Unavailable"
  return "Unknown"
}

/**
 * Maps a driver failure of `method`; `messages` replace the driver's text for the reasons a
 * caller can act on (e.g. `AlreadyExists: "user 'ann' already exists"`).
 */
export const toStoreError =
  (method: string, messages: Partial<Record<StateStoreErrorReason, string>> = {}) =>
  (e: SqlError): StateStoreError => {
    const reason = reasonOf(e)
    return new StateStoreError({ module: MODULE, method, reason, message: messages[reason] ?? e.message, cause: e })
  }

export const failWith = (method: string, reason: StateStoreErrorReason, message: string) =>
  Effect.fail(new StateStoreError({ module: MODULE, method, reason, message }))

/** Checks a caller's value against `schema`; `what` names it in the message ("user name"). */
export const validate = <A, I>(method: string, schema: Schema.Schema<A, I>, value: unknown, what: string) =>
  Schema.decodeUnknown(schema)(value).pipe(
    Effect.mapError(
      (e) => new StateStoreError({ module: MODULE, method, reason: "Invalid", message: `invalid ${what}: ${e.message}` })
    )
  )

/**
 * A stored row this store cannot read: an error naming the table and the row, never a row
 * quietly left out of an answer (the database holds something no code of ours wrote).
 */
export const unreadableRow = (method: string, table: string, id: string, problem: string): StateStoreError =>
  new StateStoreError({ module: MODULE, method, reason: "Invalid", message: `${table} row '${id}' cannot be read: ${problem}` })
