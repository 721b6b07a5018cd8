/**
 * The Codec port: turns an object pushed to a stack (a dataframe, a plot, a model, plain bytes)
 * into `{ contentType, application, metadata, body }` and back. Upstream calls these encoders
 * and decoders ("handlers"); `AutoHandler` in core/src/stacks picks one from the installed set.
 * Each codec also declares the files it reads (extensions, magic numbers, a sniffer), so that
 * `dstack push FILE` and `dstack pull` choose among installed codecs by what they declare.
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
// Files a codec reads

/**
 * A byte signature: `bytes` at `offset` (default 0). A string is read as Latin-1, one byte per
 * character, so `"\x93NUMPY"` and `[0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]` are the same magic.
 */
export interface Magic {
  readonly offset?: number
  readonly bytes: ReadonlyArray<number> | string
}

/**
 * A kind of file a codec reads and writes: how `dstack push FILE` recognises it and what
 * `dstack pull` names it.
 */
export interface FileType {
  /**
   * File name extensions, lower case with the leading dot; compound ones (`.vl.json`) are
   * matched before shorter ones. The first is the extension a pull writes.
   */
  readonly extensions: ReadonlyArray<string>
  /** The content type such a file is stored as (default: the codec's first content type). */
  readonly contentType?: string
  /** Signatures, any of which identifies the format from the file's first bytes. */
  readonly magic?: ReadonlyArray<Magic>
}

/** How many leading bytes of a file `sniff` is given (at most). */
export const SNIFF_BYTES = 64 * 1024

const magicBytes = (m: Magic): ReadonlyArray<number> =>
  typeof m.bytes === "string" ? Array.from(m.bytes, (c) => c.charCodeAt(0) & 0xff) : m.bytes

/** Does `head` carry this signature? */
export const hasMagic = (head: Uint8Array, magic: Magic): boolean => {
  const bytes = magicBytes(magic)
  const at = magic.offset ?? 0
  return bytes.length > 0 && head.length >= at + bytes.length && bytes.every((b, i) => head[at + i] === b)
}

/** The lower-cased extensions of `name` that a codec could declare: `a.vl.json` → `.vl.json`, `.json`. */
export const extensionsOf = (name: string): ReadonlyArray<string> => {
  const base = name.slice(Math.max(name.lastIndexOf("/"), name.lastIndexOf("\\")) + 1).toLowerCase()
  const out: Array<string> = []
  for (let at = base.indexOf(".", 1); at > 0; at = base.indexOf(".", at + 1)) out.push(base.slice(at))
  return out
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
 *   fileTypes: [{ extensions: [".upper"], magic: [{ bytes: "UPPER:" }] }],
 *   fromFile: (bytes) => new TextDecoder("utf-8", { fatal: true }).decode(bytes),
 *   accepts: (o) => typeof o === "string",
 *   encode: (s) => Effect.succeed({ contentType: "text/x-upper", application: "text",
 *                                   metadata: {}, body: new TextEncoder().encode(s.toUpperCase()) }),
 *   decode: (e) => Effect.map(Codec.bytes(e.body), (b) => new TextDecoder().decode(b))
 * })
 */
export interface Codec<In = unknown, Out = In> {
  /** Stable id, `<application>/<format>`, e.g. `dataframe/arrow`. */
  readonly id: string
  /**
   * The package that ships this codec. The plugin host fills it in from the contributing
   * plugin; `AutoHandler` records it in each payload's `metadata.plugin`, so that a puller
   * without the codec is told which package to install.
   */
  readonly plugin?: string
  /** The application family this codec belongs to, e.g. `dataframe`. */
  readonly application: string
  /** The content types this codec writes and reads. */
  readonly contentTypes: ReadonlyArray<string>
  /** The kinds of file this codec reads and writes (empty: it reads no files). */
  readonly fileTypes: ReadonlyArray<FileType>
  /**
   * Do these leading bytes of a file (at most `SNIFF_BYTES`) look like this codec's format, by
   * a declared magic number or the codec's own sniffer? False when it declares neither. Cheap,
   * never throws; `accepts` on `fromFile` still has the last word.
   */
  sniff(head: Uint8Array): boolean
  /**
   * The object a file's bytes stand for, for `accepts` and `encode`: the bytes themselves
   * unless the codec says otherwise (CSV text → a `Csv`, a JSON file → the parsed value);
   * `undefined` when the bytes cannot be read that way. Never throws.
   */
  fromFile(bytes: Uint8Array, name: string): unknown
  /** Does this codec know how to encode `obj`? Cheap, never throws. */
  accepts(obj: unknown): boolean
  /** Encode an accepted object; fails with `Unsupported` for one it does not accept. */
  encode(obj: In, options?: EncodeOptions): Effect.Effect<Encoded, CodecError>
  /** Can this codec decode a payload stored with this content type and application? */
  canDecode(contentType: string, application: string): boolean
  /** Decode a payload; fails with `Invalid` when the bytes are corrupt. */
  decode(encoded: Encoded): Effect.Effect<Out, CodecError>
}

/**
 * The extension a pull writes for a payload this codec decodes: the first extension of the
 * file type stored with that content type, else of its first file type; undefined when the
 * codec declares no file types.
 */
export const extensionFor = (codec: Any, contentType: string): string | undefined => {
  const type = mediaType(contentType)
  const fileTypes = codec.fileTypes ?? []
  const exact = fileTypes.find((t) => mediaType(t.contentType ?? codec.contentTypes[0] ?? "") === type && t.extensions.length > 0)
  return (exact ?? fileTypes.find((t) => t.extensions.length > 0))?.extensions[0]
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
  /** The kinds of file it reads (default: none). */
  readonly fileTypes?: ReadonlyArray<FileType>
  /** Recognises the format from leading bytes where a fixed magic number cannot (default: none). */
  readonly sniff?: (head: Uint8Array) => boolean
  /** The object a file's bytes stand for (default: the bytes). May throw: that means "not this format". */
  readonly fromFile?: (bytes: Uint8Array, name: string) => unknown
  /** The package that ships it (default: filled in by the plugin host from the contributing plugin). */
  readonly plugin?: string
}

/** The package that ships `codec`, as declared or as the plugin host recorded it. */
export const pluginOf = (codec: Any): string | undefined =>
  typeof codec.plugin === "string" && codec.plugin !== "" ? codec.plugin : undefined

/**
 * The codec as contributed by the package `plugin`: the same codec with `plugin` set, unless
 * it declares one already.
 */
export const contributedBy = <C extends Any>(codec: C, plugin: string): C =>
  pluginOf(codec) !== undefined ? codec : Object.freeze({ ...codec, plugin })

/** Strips MIME parameters and case: `Text/CSV; charset=utf-8` → `text/csv`. */
export const mediaType = (contentType: string): string =>
  contentType.split(";")[0].trim().toLowerCase()

/**
 * Builds a codec from a minimal definition: `encode` refuses objects `accepts` rejects with
 * `Unsupported`, `decode` refuses payloads `canDecode` rejects, and a defect in either
 * becomes an `Unknown` error naming the codec. `sniff` is true when a declared magic number
 * or the given sniffer matches; `fromFile` and `accepts` never throw.
 */
export const make = <In, Out = In>(options: MakeOptions<In, Out>): Codec<In, Out> => {
  const types = new Set(options.contentTypes.map(mediaType))
  const canDecode =
    options.canDecode ?? ((contentType: string, _application: string) => types.has(mediaType(contentType)))
  const fileTypes = Object.freeze((options.fileTypes ?? []).map((t) =>
    Object.freeze({ ...t, extensions: Object.freeze(t.extensions.map((e) => e.toLowerCase())) })
  ))
  const guard = <X>(method: string, effect: Effect.Effect<X, CodecError>) =>
    Effect.catchAllDefect(Effect.suspend(() => effect), (defect) =>
      fail(options.id, method, "Unknown", `${options.id} ${method} failed: ${describe(defect)}`, defect)
    )
  return {
    id: options.id,
    ...(options.plugin === undefined ? {} : { plugin: options.plugin }),
    application: options.application,
    contentTypes: options.contentTypes,
    fileTypes,
    sniff: (head) => {
      if (fileTypes.some((t) => (t.magic ?? []).some((m) => hasMagic(head, m)))) return true
      try {
        return options.sniff?.(head) === true
      } catch {
        return false
      }
    },
    fromFile: (bytes, name) => {
      try {
        return options.fromFile === undefined ? bytes : options.fromFile(bytes, name)
      } catch {
        return undefined
      }
    },
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
