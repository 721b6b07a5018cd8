/** What the model codecs decode to: the model's bytes with what is known about them. */
import { Codec, StackContentTypes } from "@dstack-ts/core"
import { Effect } from "effect"

export type ModelFormat = "onnx" | "safetensors" | "file"

/** A pulled model: its bytes, its format and framework, and the metadata stored with it. */
export interface Model {
  readonly _tag: "Model"
  readonly format: ModelFormat
  /** `onnx`, `safetensors`'s producer if known, or what the caller said (`pytorch`, `sklearn` …). */
  readonly framework: string
  readonly bytes: Uint8Array
  readonly metadata: Codec.Metadata
}

export const isModel = (o: unknown, format?: ModelFormat): o is Model =>
  typeof o === "object" && o !== null && (o as Model)._tag === "Model" && (o as Model).bytes instanceof Uint8Array &&
  (format === undefined || (o as Model).format === format)

/** What a self-describing model format gives: its metadata is read from its own bytes. */
export interface SelfDescribingFormat {
  readonly id: string
  readonly format: Exclude<ModelFormat, "file">
  readonly contentType: string
  /** Whether raw bytes look like this format. */
  readonly detect: (o: unknown) => boolean
  /** The files of this format: extensions, magic numbers. */
  readonly fileTypes: ReadonlyArray<Codec.FileType>
  /** Recognises the format from a file's first bytes, where no fixed magic number can. */
  readonly sniff?: (head: Uint8Array) => boolean
  /** The metadata of the bytes, or an `Invalid` error when they are not this format. */
  readonly read: (method: string, bytes: Uint8Array) => Effect.Effect<Codec.Metadata, Codec.CodecError>
  /** The framework a pulled model reports, from its metadata. */
  readonly framework: (metadata: Codec.Metadata) => string
}

/** A codec for a format whose metadata comes from its bytes (ONNX, safetensors). */
export const selfDescribingCodec = (f: SelfDescribingFormat): Codec.Codec<Uint8Array | Model, Model> =>
  Codec.make<Uint8Array | Model, Model>({
    plugin: "@dstack-ts/handler-model",
    id: f.id,
    application: StackContentTypes.Application.model,
    contentTypes: [f.contentType],
    fileTypes: f.fileTypes,
    ...(f.sniff !== undefined ? { sniff: f.sniff } : {}),
    accepts: (o) => f.detect(o) || isModel(o, f.format),
    encode: (input) => {
      const bytes = input instanceof Uint8Array ? input : input.bytes
      return Effect.map(f.read("encode", bytes), (metadata) => ({
        contentType: f.contentType,
        application: StackContentTypes.Application.model,
        metadata,
        body: bytes
      }))
    },
    decode: (encoded) =>
      Effect.gen(function*() {
        const bytes = yield* Codec.bytes(encoded.body)
        const metadata = yield* f.read("decode", bytes)
        return { _tag: "Model", format: f.format, framework: f.framework(metadata), bytes, metadata } satisfies Model
      })
  })
