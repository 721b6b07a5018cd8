/** What the model codecs decode to: the model's bytes with what is known about them. */
import type { Codec } from "@dstack-ts/core"

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
