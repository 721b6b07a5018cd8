/**
 * Any other model file (a PyTorch checkpoint, a pickled scikit-learn estimator, a GGUF …):
 * bytes the caller marks with `modelFile(bytes, { framework })`, stored verbatim with the
 * framework and an optional name in the metadata.
 */
import { Codec, StackContentTypes } from "@dstack-ts/core"
import { Effect } from "effect"
import { isModel, type Model } from "./internal/Model.ts"

const ID = "model/file"

export interface ModelFileOptions {
  /** What reads these bytes: `pytorch`, `tensorflow`, `sklearn`, `xgboost`, `gguf` … Required. */
  readonly framework: string
  /** A file name to keep, e.g. `model.pt`. */
  readonly name?: string
}

/** Model bytes with the framework that reads them. */
export class ModelFile {
  readonly _tag = "ModelFile"
  constructor(readonly bytes: Uint8Array, readonly framework: string, readonly name?: string) {}
}

/** Marks bytes as a model of the given framework: `push("clf", modelFile(bytes, { framework: "sklearn" }))`. */
export const modelFile = (bytes: Uint8Array, options: ModelFileOptions): ModelFile =>
  new ModelFile(bytes, options.framework, options.name)

const isModelFile = (o: unknown): o is ModelFile =>
  o instanceof ModelFile ||
  (typeof o === "object" && o !== null && (o as ModelFile)._tag === "ModelFile" && (o as ModelFile).bytes instanceof Uint8Array)

const FRAMEWORK = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$/

/** The model files `dstack push` recognises, with the framework each extension means. */
const FILE_FRAMEWORKS: ReadonlyArray<readonly [extension: string, framework: string]> = [
  [".pt", "pytorch"],
  [".pth", "pytorch"],
  [".gguf", "gguf"],
  [".joblib", "sklearn"],
  [".keras", "keras"],
  [".pkl", "pickle"]
]
const GGUF_MAGIC: Codec.Magic = { bytes: "GGUF" }

/** A model file read from disk: the framework from its extension, or GGUF by its magic number. */
const fromFile = (bytes: Uint8Array, name: string): ModelFile | undefined => {
  const extensions = Codec.extensionsOf(name)
  const framework = FILE_FRAMEWORKS.find(([ext]) => extensions.includes(ext))?.[1] ??
    (Codec.hasMagic(bytes, GGUF_MAGIC) ? "gguf" : undefined)
  const base = name.split(/[\\/]/).pop()
  return framework === undefined ? undefined : modelFile(bytes, { framework, ...(base ? { name: base } : {}) })
}

export const modelFileCodec: Codec.Codec<ModelFile | Model, Model> = Codec.make<ModelFile | Model, Model>({
  plugin: "@dstack-ts/handler-model",
  id: ID,
  application: StackContentTypes.Application.model,
  contentTypes: [StackContentTypes.ContentType.modelFile],
  fileTypes: FILE_FRAMEWORKS.map(([extension]) =>
    extension === ".gguf" ? { extensions: [extension], magic: [GGUF_MAGIC] } : { extensions: [extension] }
  ),
  fromFile,
  accepts: (o) => isModelFile(o) || isModel(o, "file"),
  encode: (input) => {
    const framework = input.framework
    if (typeof framework !== "string" || !FRAMEWORK.test(framework)) {
      return Codec.fail(ID, "encode", "Invalid", `framework must be a short name such as "pytorch", got ${JSON.stringify(framework)}`)
    }
    if (input.bytes.length === 0) return Codec.fail(ID, "encode", "Invalid", "the model file is empty")
    const name = isModelFile(input) ? input.name : typeof input.metadata.name === "string" ? input.metadata.name : undefined
    return Effect.succeed({
      contentType: StackContentTypes.ContentType.modelFile,
      application: StackContentTypes.Application.model,
      metadata: { format: "file", framework, size: input.bytes.length, ...(name !== undefined ? { name } : {}) },
      body: input.bytes
    })
  },
  decode: (encoded) =>
    Effect.gen(function*() {
      const framework = encoded.metadata.framework
      if (typeof framework !== "string" || framework === "") {
        return yield* Codec.fail(ID, "decode", "Invalid", "the stored metadata names no framework")
      }
      const bytes = yield* Codec.bytes(encoded.body)
      if (bytes.length === 0) return yield* Codec.fail(ID, "decode", "Invalid", "the model file is empty")
      return { _tag: "Model", format: "file", framework, bytes, metadata: { ...encoded.metadata, size: bytes.length } } satisfies Model
    })
})
