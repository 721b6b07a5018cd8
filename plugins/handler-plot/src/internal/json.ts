/** JSON helpers shared by the Vega-Lite and Plotly codecs. */
import { BuiltinCodecs, Codec } from "@dstack-ts/core"
import { Effect } from "effect"

export const isPlainObject = (o: unknown): o is Record<string, unknown> => {
  if (typeof o !== "object" || o === null || Array.isArray(o)) return false
  const proto = Object.getPrototypeOf(o)
  return proto === Object.prototype || proto === null
}

/** A JSON object (no class instances, NaN, functions …) — what a spec or figure must be. */
export const isJsonObject = (o: unknown): o is Record<string, unknown> =>
  isPlainObject(o) && BuiltinCodecs.notJson(o) === undefined

const utf8 = new TextEncoder()

export const jsonBytes = (value: unknown): Uint8Array => utf8.encode(JSON.stringify(value))

/** A JSON file's value (a codec's `fromFile`; throws on bytes that are not UTF-8 JSON). */
export const parseJsonFile = (bytes: Uint8Array): unknown =>
  JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes))

/** Parses a JSON object from a body, failing `Invalid` (naming `what`) on anything else. */
export const readJsonObject = (
  id: string,
  body: Codec.Body,
  what: string,
  looksRight: (o: Record<string, unknown>) => boolean
): Effect.Effect<Record<string, unknown>, Codec.CodecError> =>
  Effect.gen(function*() {
    const bytes = yield* Codec.bytes(body)
    const value = yield* Codec.attempt(id, "decode", "Invalid", `${what} is not valid JSON`, () =>
      JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as unknown)
    if (!isPlainObject(value) || !looksRight(value)) {
      return yield* Codec.fail(id, "decode", "Invalid", `payload is JSON but not a ${what}`)
    }
    return value
  })

/** A number, or a pixel size like "400px"; undefined otherwise ("100%", "container"). */
export const pixels = (v: unknown): number | undefined => {
  if (typeof v === "number" && Number.isFinite(v)) return v
  if (typeof v === "string") {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(px)?\s*$/.exec(v)
    if (m) return Number(m[1])
  }
  return undefined
}

/** Only the keys whose value is defined, so metadata stays valid JSON. */
export const defined = (o: Record<string, Codec.Json | undefined>): Codec.Metadata => {
  const out: Record<string, Codec.Json> = {}
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v
  return out
}
