/**
 * AutoHandler: picks the codec for an object on push and for a stored payload on pull, from
 * the codecs that installed plugins contribute followed by core's built-ins. Upstream's
 * `AutoHandler` does the same for Python objects; an explicit encoder or decoder given by the
 * caller always wins.
 */
import { Context, Effect, Layer, Option } from "effect"
import * as Codec from "../ports/Codec.ts"
import * as BuiltinCodecs from "./BuiltinCodecs.ts"

/** Options of `AutoHandler.encode`: the codec's own options plus an explicit encoder. */
export interface EncodeOptions extends Codec.EncodeOptions {
  /** Use this codec instead of choosing one (upstream `encoder=`). */
  readonly encoder?: Codec.Any
}

/** Options of `AutoHandler.decode`. */
export interface DecodeOptions {
  /** Use this codec instead of choosing one (upstream `decoder=`). */
  readonly decoder?: Codec.Any
}

/** How a file was recognised: by its name, its first bytes, or both. */
export type RecognisedBy = "extension" | "content" | "extension and content"

/**
 * The codec chosen for a file, with the object to encode (from the codec's `fromFile`), or
 * none; `declined` lists the codecs that claimed the file by name or bytes but did not accept
 * what they read from it, so that a caller can say why the file is stored as bytes.
 */
export type FileMatch =
  | { readonly _tag: "Matched"; readonly codec: Codec.Any; readonly object: unknown; readonly by: RecognisedBy }
  | { readonly _tag: "Unmatched"; readonly declined: ReadonlyArray<{ readonly codec: string; readonly by: RecognisedBy }> }

/** The result of an encode together with the id of the codec that wrote it. */
export interface Encoded extends Codec.Encoded {
  readonly codec: string
}

export interface Service {
  /** Plugin codecs first, in install order, then the built-ins. */
  readonly codecs: ReadonlyArray<Codec.Any>
  /** The codec that would encode `obj`: the first whose `accepts` says yes. */
  readonly encoderFor: (obj: unknown) => Option.Option<Codec.Any>
  /** The codec that would decode a payload of this content type and application. */
  readonly decoderFor: (contentType: string, application: string) => Option.Option<Codec.Any>
  /**
   * The codec for a file, from what the codecs declare: those that recognise both its name
   * (an extension) and its first bytes (a magic number or sniffer) first, then by bytes alone,
   * then by name alone, each in priority order; the first whose `accepts` takes what its
   * `fromFile` read wins.
   */
  readonly forFile: (name: string, bytes: Uint8Array) => FileMatch
  /** The extension a pull writes for a payload of this content type and application (`.bin` if no codec declares one). */
  readonly extensionFor: (contentType: string, application: string) => string
  readonly encode: (obj: unknown, options?: EncodeOptions) => Effect.Effect<Encoded, Codec.CodecError>
  readonly decode: (encoded: Codec.Encoded, options?: DecodeOptions) => Effect.Effect<unknown, Codec.CodecError>
}

export class AutoHandler extends Context.Tag("@dstack-ts/core/AutoHandler")<AutoHandler, Service>() {}

export interface MakeOptions {
  /** Append core's bytes/text/JSON codecs after the given ones (default true). */
  readonly builtins?: boolean
}

/**
 * Builds an AutoHandler over the given codecs.
 *
 * @example
 * const auto = AutoHandler.make([...dataframe.codecs])
 * const encoded = yield* auto.encode([{ a: 1 }, { a: 2 }])   // dataframe/arrow
 * const table = yield* auto.decode(encoded)
 */
export const make = (codecs: ReadonlyArray<Codec.Any>, options: MakeOptions = {}): Service => {
  const all = options.builtins === false ? [...codecs] : [...codecs, ...BuiltinCodecs.all]
  const encoderFor = (obj: unknown) => Option.fromNullable(all.find((c) => c.accepts(obj)))
  const decoderFor = (contentType: string, application: string) =>
    Option.fromNullable(all.find((c) => c.canDecode(contentType, application)))

  const forFile = (name: string, bytes: Uint8Array): FileMatch => {
    const extensions = Codec.extensionsOf(name)
    const head = bytes.subarray(0, Codec.SNIFF_BYTES)
    const claims = all.flatMap((codec) => {
      const byName = codec.fileTypes.some((t) => t.extensions.some((e) => extensions.includes(e)))
      const byContent = codec.sniff(head)
      const by: RecognisedBy | undefined = byName && byContent ? "extension and content" : byContent ? "content" : byName ? "extension" : undefined
      return by === undefined ? [] : [{ codec, by }]
    })
    const rank: Record<RecognisedBy, number> = { "extension and content": 0, content: 1, extension: 2 }
    const ordered = claims.map((c, i) => ({ ...c, i })).sort((a, b) => rank[a.by] - rank[b.by] || a.i - b.i)
    for (const { by, codec } of ordered) {
      const object = codec.fromFile(bytes, name)
      if (object !== undefined && codec.accepts(object)) return { _tag: "Matched", codec, object, by }
    }
    return { _tag: "Unmatched", declined: ordered.map(({ by, codec }) => ({ codec: codec.id, by })) }
  }

  const extensionFor = (contentType: string, application: string): string =>
    Option.match(decoderFor(contentType, application), {
      onNone: () => ".bin",
      onSome: (codec) => Codec.extensionFor(codec, contentType) ?? ".bin"
    })

  const encode = (obj: unknown, encodeOptions: EncodeOptions = {}) => {
    const { encoder, ...rest } = encodeOptions
    const chosen = encoder !== undefined ? Option.some(encoder) : encoderFor(obj)
    return Option.match(chosen, {
      onNone: () =>
        Codec.fail(
          "AutoHandler",
          "encode",
          "Unsupported",
          `no installed codec accepts ${Codec.kindOf(obj)}; installed: ${all.map((c) => c.id).join(", ")}`
        ),
      onSome: (codec) =>
        Effect.map(codec.encode(obj, rest), (encoded): Encoded => ({ ...withPlugin(encoded, codec), codec: codec.id }))
    })
  }

  const decode = (encoded: Codec.Encoded, decodeOptions: DecodeOptions = {}) => {
    const chosen = decodeOptions.decoder !== undefined
      ? Option.some(decodeOptions.decoder)
      : decoderFor(encoded.contentType, encoded.application)
    return Option.match(chosen, {
      onNone: () => {
        // The payload names the package whose codec wrote it (`metadata.plugin`, recorded at
        // push), so that a puller without it learns what to install.
        const plugin = payloadPlugin(encoded)
        const what = `content type ${encoded.contentType} (application ${encoded.application})`
        return Codec.fail(
          "AutoHandler",
          "decode",
          "NotInstalled",
          plugin !== undefined
            ? `no installed codec decodes ${what}: install the plugin ${plugin}`
            : `no installed codec decodes ${what}: install a plugin whose codec reads it; installed: ${all.map((c) => c.id).join(", ")}`
        )
      },
      onSome: (codec) => codec.decode(encoded)
    })
  }

  return { codecs: all, encoderFor, decoderFor, forFile, extensionFor, encode, decode }
}

/** The package a payload says its codec came from (`metadata.plugin`), if any. */
export const payloadPlugin = (encoded: Pick<Codec.Encoded, "metadata">): string | undefined => {
  const named = (encoded.metadata as { plugin?: unknown } | undefined)?.plugin
  return typeof named === "string" && named !== "" ? named : undefined
}

/** The payload with the codec's package recorded in `metadata.plugin`, unless it names one already. */
const withPlugin = (encoded: Codec.Encoded, codec: Codec.Any): Codec.Encoded => {
  const plugin = Codec.pluginOf(codec)
  return plugin === undefined || payloadPlugin(encoded) !== undefined
    ? encoded
    : { ...encoded, metadata: { ...encoded.metadata, plugin } }
}

/** The AutoHandler over the installed codecs (`Codec.Codecs`) and the built-ins. */
export const layer: Layer.Layer<AutoHandler, never, Codec.Codecs> = Layer.effect(
  AutoHandler,
  Effect.map(Codec.Codecs, (codecs) => make(codecs))
)

/** An AutoHandler over exactly these codecs plus the built-ins, without the plugin host. */
export const layerWith = (codecs: ReadonlyArray<Codec.Any>): Layer.Layer<AutoHandler> =>
  Layer.succeed(AutoHandler, make(codecs))
