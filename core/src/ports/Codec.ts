/**
 * The Codec port: turns an object pushed to a stack (a dataframe, a plot, a model, plain bytes)
 * into `{ contentType, application, metadata, body }` and back. Upstream calls these encoders
 * and decoders ("handlers"); `AutoHandler` in core/src/stacks picks one from the installed set.
 */
import { collectBytes, concatBytes } from "../internal/bytes.ts"
import { Context, Effect, Layer, Schema, Stream } from "effect"

// ---------------------------------------------------------------------------------------------
// Errors

/** Why a codec failed. A closed set: storage and the server map each one to a response. */
export const CodecErrorReason = Schema.Literal("Unsupported", "Invalid", "NotInstalled", "Unknown")
export type CodecErrorReason = typeof CodecErrorReason.Type

/**
 * The one error of the Codec port.
 * - `Unsupported`: the codec does not accept this object or payload.
 * - `Invalid`: the bytes or the object are malformed (corrupt file, wrong shape).
 * - `NotInstalled`: no installed codec decodes this payload; the message names the plugin.
 * - `Unknown`: anything else, with the foreign error kept in `cause`.
 */
export class CodecError extends Schema.TaggedError<CodecError>("@dstack-ts/core/Codec/CodecError")(
  "CodecError",
  {
    module: Schema.String,
    method: Schema.String,
    reason: CodecErrorReason,
    message: Schema.optional(Schema.String),
    cause: Schema.optional(Schema.Defect)
  }
) {
  /** No codec failure is cured by trying again with the same input. */
  get isRetryable(): boolean {
    return false
  }
}

/** Shorthand used by codecs: `fail("dataframe/arrow", "decode", "Invalid", "not an Arrow IPC stream", e)`. */
export const fail = (
  module: string,
  method: string,
  reason: CodecErrorReason,
  message: string,
  cause?: unknown
): Effect.Effect<never, CodecError> =>
  Effect.fail(new CodecError({ module, method, reason, message, ...(cause === undefined ? {} : { cause }) }))

/**
 * Runs a synchronous function that may throw (a foreign parser) and maps a throw to a
 * `CodecError` with the given reason, keeping the thrown value as `cause`.
 */
export const attempt = <A>(
  module: string,
  method: string,
  reason: CodecErrorReason,
  message: string,
  f: () => A
): Effect.Effect<A, CodecError> =>
  Effect.try({
    try: f,
    catch: (cause) =>
      new CodecError({ module, method, reason, message: `${message}: ${describe(cause)}`, cause })
  })

/** Like `attempt` for a function returning a Promise (lazily loaded WASM, async readers). */
export const attemptPromise = <A>(
  module: string,
  method: string,
  reason: CodecErrorReason,
  message: string,
  f: () => PromiseLike<A>
): Effect.Effect<A, CodecError> =>
  Effect.tryPromise({
    try: () => Promise.resolve(f()),
    catch: (cause) =>
      new CodecError({ module, method, reason, message: `${message}: ${describe(cause)}`, cause })
  })

const describe = (cause: unknown): string =>
  cause instanceof Error ? cause.message : typeof cause === "string" ? cause : String(cause)

// ---------------------------------------------------------------------------------------------
// Data

/** A JSON value: what metadata may hold, because it is stored and served as JSON. */
export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }

/** Facts about an encoded object shown without decoding it (schema, row count, width …). */
export type Metadata = { readonly [key: string]: Json }

/** The bytes of an encoded object: whole, or streamed for large objects. */
export type Body = Uint8Array | Stream.Stream<Uint8Array, CodecError>

/**
 * What an encoder produces and a decoder reads. `contentType` and `application` are stored
 * with the attachment so that a pull picks the right decoder.
 */
export interface Encoded {
  /** A MIME type, e.g. `application/vnd.apache.arrow.stream`, `image/png`. */
  readonly contentType: string
  /** The upstream application family: `dataframe`, `plot`, `model`, `bytes`, `json`, `text`. */
  readonly application: string
  readonly metadata: Metadata
  readonly body: Body
}

/**
 * The part of `Encoded` that is stored beside the bytes, as a schema (snake_case on the wire).
 */
export const EncodedHeader = Schema.Struct({
  contentType: Schema.propertySignature(Schema.String).pipe(Schema.fromKey("content_type")),
  application: Schema.String,
  metadata: Schema.Record({ key: Schema.String, value: Schema.Unknown })
})
export type EncodedHeader = typeof EncodedHeader.Type

/**
 * Options a caller passes to `encode`. Codecs read the keys they know and ignore the rest,
 * e.g. `{ format: "parquet" }` for a dataframe or `{ framework: "pytorch" }` for a model.
 */
export interface EncodeOptions {
  /** Ask for a specific content type when a codec can write several. */
  readonly contentType?: string
  readonly [key: string]: unknown
}

// ---------------------------------------------------------------------------------------------
// The port

/**
 * One encoder/decoder pair: encodes an `In`, decodes to an `Out` (CSV text decodes to a
 * table, so the two may differ). Methods use method syntax on purpose: a `Codec<Table>` is
 * then usable where a `Codec` (of unknown) is expected, as in a plugin's `codecs` list.
 *
 * @example
 * const upper = Codec.make<string>({
 *   id: "text/upper", application: "text", contentTypes: ["text/x-upper"],
 *   accepts: (o) => typeof o === "string",
 *   encode: (s) => Effect.succeed({ contentType: "text/x-upper", application: "text",
 *                                   metadata: {}, body: new TextEncoder().encode(s.toUpperCase()) }),
 *   decode: (e) => Effect.map(Codec.bytes(e.body), (b) => new TextDecoder().decode(b))
 * })
 */
export interface Codec<In = unknown, Out = In> {
  /** Stable id, `<application>/<format>`, e.g. `dataframe/arrow`. */
  readonly id: string
  /** The application family this codec belongs to, e.g. `dataframe`. */
  readonly application: string
  /** The content types this codec writes and reads. */
  readonly contentTypes: ReadonlyArray<string>
  /** Does this codec know how to encode `obj`? Cheap, never throws. */
  accepts(obj: unknown): boolean
  /** Encode an accepted object; fails with `Unsupported` for one it does not accept. */
  encode(obj: In, options?: EncodeOptions): Effect.Effect<Encoded, CodecError>
  /** Can this codec decode a payload stored with this content type and application? */
  canDecode(contentType: string, application: string): boolean
  /** Decode a payload; fails with `Invalid` when the bytes are corrupt. */
  decode(encoded: Encoded): Effect.Effect<Out, CodecError>
}

/** A codec of any object type, as held in a registry. */
export type Any = Codec<any, any>

/** The installed codecs, in priority order. The plugin host provides it from plugins' `codecs`. */
export class Codecs extends Context.Tag("@dstack-ts/core/Codec")<Codecs, ReadonlyArray<Any>>() {}

/** The minimal definition `make` completes. */
export interface MakeOptions<In, Out = In> {
  readonly id: string
  readonly application: string
  readonly contentTypes: ReadonlyArray<string>
  readonly accepts: (obj: unknown) => boolean
  readonly encode: (obj: In, options: EncodeOptions) => Effect.Effect<Encoded, CodecError>
  readonly decode: (encoded: Encoded) => Effect.Effect<Out, CodecError>
  /** Defaults to: the content type (parameters ignored) is one of `contentTypes`. */
  readonly canDecode?: (contentType: string, application: string) => boolean
}

/** Strips MIME parameters and case: `Text/CSV; charset=utf-8` → `text/csv`. */
export const mediaType = (contentType: string): string =>
  contentType.split(";")[0].trim().toLowerCase()

/**
 * Builds a codec from a minimal definition: `encode` refuses objects `accepts` rejects with
 * `Unsupported`, `decode` refuses payloads `canDecode` rejects, and a defect in either
 * becomes an `Unknown` error naming the codec.
 */
export const make = <In, Out = In>(options: MakeOptions<In, Out>): Codec<In, Out> => {
  const types = new Set(options.contentTypes.map(mediaType))
  const canDecode =
    options.canDecode ?? ((contentType: string, _application: string) => types.has(mediaType(contentType)))
  const guard = <X>(method: string, effect: Effect.Effect<X, CodecError>) =>
    Effect.catchAllDefect(Effect.suspend(() => effect), (defect) =>
      fail(options.id, method, "Unknown", `${options.id} ${method} failed: ${describe(defect)}`, defect)
    )
  return {
    id: options.id,
    application: options.application,
    contentTypes: options.contentTypes,
    accepts: (obj) => {
      try {
        return options.accepts(obj)
      } catch {
        return false
      }
    },
    canDecode,
    encode: (obj, encodeOptions) =>
      guard(
        "encode",
        Effect.suspend(() =>
          options.accepts(obj)
            ? options.encode(obj, encodeOptions ?? {})
            : fail(options.id, "encode", "Unsupported", `${options.id} does not accept ${kindOf(obj)}`)
        )
      ),
    decode: (encoded) =>
      guard(
        "decode",
        Effect.suspend(() =>
          canDecode(encoded.contentType, encoded.application)
            ? options.decode(encoded)
            : fail(
              options.id,
              "decode",
              "Unsupported",
              `${options.id} cannot decode content type ${encoded.contentType} (application ${encoded.application})`
            )
        )
      )
  }
}

/** A short human description of a value's kind for error messages. */
export const kindOf = (obj: unknown): string => {
  if (obj === null) return "null"
  if (Array.isArray(obj)) return "an array"
  if (obj instanceof Uint8Array) return "bytes"
  if (typeof obj === "object") {
    const name = (obj as object).constructor?.name
    return name && name !== "Object" ? `a ${name}` : "an object"
  }
  return `a ${typeof obj}`
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Collects a body into one `Uint8Array` (a no-op for bytes). */
export const bytes = (body: Body): Effect.Effect<Uint8Array, CodecError> => collectBytes(body)

/** Concatenates byte chunks. */
export const concat = concatBytes

/** Provides a fixed list of installed codecs (tests, custom builds without the plugin host). */
export const layer = (codecs: ReadonlyArray<Any>): Layer.Layer<Codecs> => Layer.succeed(Codecs, codecs)

/** No installed codecs: only core's built-ins work through `AutoHandler`. */
export const layerEmpty: Layer.Layer<Codecs> = layer([])
