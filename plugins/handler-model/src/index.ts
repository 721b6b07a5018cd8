/**
 * @dstack-ts/handler-model — stack codecs for models: ONNX (inputs and outputs read from the
 * graph), safetensors (tensor names, dtypes and shapes from the header) and any other model
 * file with the framework the caller names. Each decodes to a `Model`: bytes plus metadata.
 */
import { type Codec, definePlugin } from "@dstack-ts/core"
import { modelFileCodec } from "./ModelFileCodec.ts"
import { onnx } from "./OnnxCodec.ts"
import { safetensors } from "./SafetensorsCodec.ts"

export { isModel, type Model, type ModelFormat } from "./internal/Model.ts"
export { ModelFile, modelFile, modelFileCodec, type ModelFileOptions } from "./ModelFileCodec.ts"
export { isOnnx, onnx, type OnnxInput } from "./OnnxCodec.ts"
export { isSafetensors, safetensors, type SafetensorsInput } from "./SafetensorsCodec.ts"

export const PLUGIN_NAME = "@dstack-ts/handler-model"
export const PLUGIN_VERSION = "0.1.0"

/**
 * The codecs this plugin contributes, in the order the AutoHandler tries them; each names this
 * package (`plugin`), which is recorded with what it writes so that a puller without it is told
 * what to install.
 */
export const codecs: ReadonlyArray<Codec.Any> = [onnx, safetensors, modelFileCodec]

/** The plugin descriptor: `plugins: [model]` in a server or client build. */
export default definePlugin({
  name: PLUGIN_NAME,
  version: PLUGIN_VERSION,
  core: "^0.1.0",
  description: "Stack codecs for models: ONNX, safetensors and other model files.",
  codecs
})
