/**
 * Codecs that ship in core: plain bytes, text and JSON values. `AutoHandler` tries them after
 * every installed plugin codec, so a plugin that recognises a richer object (PNG bytes, an
 * array of records) wins over these fallbacks.
 */
import { Effect } from "effect"
import * as Codec from "../ports/Codec.ts"
import { Application, ContentType } from "./ContentTypes.ts"

/** `Uint8Array` stored as is. Metadata: `size` in bytes. */
export const bytes: Codec.Codec<Uint8Array> = Codec.make<Uint8Array>({
  id: "bytes/octet-stream",
  application: Application.bytes,
  contentTypes: [ContentType.bytes],
  accepts: (obj) => obj instanceof Uint8Array,
  encode: (obj) =>
    Effect.succeed({
      contentType: ContentType.bytes,
      application: Application.bytes,
      metadata: { size: obj.length },
      body: obj
    }),
  decode: (encoded) => Codec.bytes(encoded.body)
})

const utf8 = new TextEncoder()

/** A string, stored as UTF-8. Metadata: `size` in bytes and `length` in characters. */
export const text: Codec.Codec<string> = Codec.make<string>({
  id: "text/plain",
  application: Application.text,
  contentTypes: [ContentType.text],
  // A BOM is kept (ignoreBOM), so a pushed file pulls back byte for byte.
  fileTypes: [{ extensions: [".txt", ".text"] }],
  fromFile: (bytes) => new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes),
  accepts: (obj) => typeof obj === "string",
  encode: (obj) => {
    const body = utf8.encode(obj)
    return Effect.succeed({
      contentType: ContentType.text,
      application: Application.text,
      metadata: { size: body.length, length: obj.length },
      body
    })
  },
  decode: (encoded) =>
    Effect.flatMap(Codec.bytes(encoded.body), (body) =>
      Codec.attempt("text/plain", "decode", "Invalid", "text is not valid UTF-8", () =>
        new TextDecoder("utf-8", { fatal: true }).decode(body)
      ))
})

/**
 * Why `value` is not a JSON value, as a path and a reason, or `undefined` when it is one.
 * Only plain objects and arrays qualify, so class instances (a Date, an Arrow table) are left
 * to codecs that know them instead of being flattened silently by `JSON.stringify`.
 */
export const notJson = (value: unknown, path = "$", seen = new Set<object>()): string | undefined => {
  switch (typeof value) {
    case "string":
    case "boolean":
      return undefined
    case "number":
      return Number.isFinite(value) ? undefined : `${path} is ${value}, which JSON cannot hold`
    case "object": {
      if (value === null) return undefined
      if (seen.has(value)) return `${path} is a cycle`
      const proto = Object.getPrototypeOf(value)
      const isArray = Array.isArray(value)
      if (!isArray && proto !== Object.prototype && proto !== null) {
        return `${path} is ${Codec.kindOf(value)}, not a plain object`
      }
      seen.add(value)
      const entries: Array<[string, unknown]> = isArray
        ? (value as Array<unknown>).map((v, i) => [`${path}[${i}]`, v])
        : Object.entries(value).map(([k, v]) => [`${path}.${k}`, v])
      for (const [p, v] of entries) {
        const why = notJson(v, p, seen)
        if (why !== undefined) return why
      }
      seen.delete(value)
      return undefined
    }
    default:
      return `${path} is ${Codec.kindOf(value)}, which JSON cannot hold`
  }
}

const jsonKind = (value: unknown): string =>
  value === null ? "null" : Array.isArray(value) ? "array" : typeof value

/** Any JSON value (plain objects, arrays, strings, finite numbers, booleans, null). */
export const json: Codec.Codec<unknown> = Codec.make<unknown>({
  id: "json/value",
  application: Application.json,
  contentTypes: [ContentType.json],
  // A pushed .json file is stored as its value (a pull writes it back as compact JSON).
  fileTypes: [{ extensions: [".json"] }],
  fromFile: (bytes) => JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as unknown,
  accepts: (obj) => notJson(obj) === undefined,
  encode: (obj) => {
    const body = utf8.encode(JSON.stringify(obj))
    return Effect.succeed({
      contentType: ContentType.json,
      application: Application.json,
      metadata: { size: body.length, kind: jsonKind(obj) },
      body
    })
  },
  decode: (encoded) =>
    Effect.flatMap(Codec.bytes(encoded.body), (body) =>
      Codec.attempt("json/value", "decode", "Invalid", "payload is not valid JSON", () =>
        JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body)) as unknown
      ))
})

/** The built-ins in the order `AutoHandler` tries them. */
export const all: ReadonlyArray<Codec.Any> = [bytes, text, json]
