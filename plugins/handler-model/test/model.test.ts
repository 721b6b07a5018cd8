// Model codecs: conformance, ONNX inputs/outputs read from models written with the ONNX
// schema, safetensors headers, model files with a framework, and the AutoHandler's choices.
import { AutoHandler, Codec } from "@dstack-ts/core"
import { testCodec } from "@dstack-ts/core/testing"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import plugin, { codecs, isOnnx, type Model, modelFile, modelFileCodec, onnx, PLUGIN_NAME, safetensors } from "../src/index.ts"
import { mlpOnnx, safetensorsFile } from "./fixtures.ts"

const enc = new TextEncoder()
const bytesOf = (v: unknown): unknown => (v instanceof Uint8Array ? v : (v as Model).bytes)

const mlp = mlpOnnx()
const st = safetensorsFile()
const pt = new Uint8Array([0x50, 0x4b, 0x03, 0x04, 1, 2, 3, 4, 5]) // a PyTorch zip archive's start

testCodec("model/onnx", onnx, {
  accepted: [
    { name: "an MLP written with the ONNX schema", value: mlp },
    { name: "an older export listing weights as inputs", value: mlpOnnx({ initializersAsInputs: true }) }
  ],
  rejected: [
    { name: "safetensors bytes", value: st },
    { name: "a PyTorch archive", value: pt },
    { name: "a varint then garbage", value: new Uint8Array([0x08, 0x07, 0xff, 0xff, 0xff]) },
    { name: "a string", value: "onnx" }
  ],
  corrupt: [
    { name: "a truncated model", body: mlp.slice(0, mlp.length - 20) },
    { name: "text", body: enc.encode("not a model") },
    { name: "a model without a graph", body: new Uint8Array([0x08, 0x08, 0x12, 0x01, 0x61]) }
  ],
  normalize: bytesOf
})

const badOffsets = (() => {
  const b = safetensorsFile()
  const text = new TextDecoder().decode(b)
  const i = text.indexOf("[0,160]")
  b.set(enc.encode("[0,999]"), i)
  return b
})()

testCodec("model/safetensors", safetensors, {
  accepted: [{ name: "a file with three tensors and __metadata__", value: st }],
  rejected: [
    { name: "ONNX bytes", value: mlp },
    { name: "random bytes", value: new Uint8Array(64).fill(7) },
    { name: "an object", value: { dtype: "F32" } }
  ],
  corrupt: [
    { name: "offsets beyond the data", body: badOffsets },
    { name: "a header length past the end", body: new Uint8Array([0xff, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x7d]) },
    { name: "a truncated file", body: st.slice(0, st.length - 10) }
  ],
  normalize: bytesOf
})

testCodec("model/file", modelFileCodec, {
  accepted: [
    { name: "a PyTorch checkpoint", value: modelFile(pt, { framework: "pytorch", name: "model.pt" }) },
    { name: "a pickled estimator", value: modelFile(enc.encode("\x80\x04pickle"), { framework: "sklearn" }) }
  ],
  rejected: [
    { name: "bare bytes (no framework)", value: pt },
    { name: "a string", value: "model.pt" }
  ],
  corrupt: [{ name: "an empty body", body: new Uint8Array() }],
  normalize: bytesOf
})

describe("ONNX metadata", () => {
  it.effect("names inputs and outputs with element types and symbolic/fixed shapes", () =>
    Effect.gen(function*() {
      const { metadata } = yield* onnx.encode(mlp)
      expect(metadata).toMatchObject({
        format: "onnx",
        framework: "onnx",
        ir_version: 8,
        opset: { "ai.onnx": 17 },
        producer_name: "pytorch",
        producer_version: "2.1.0",
        model_version: 3,
        graph_name: "mlp",
        inputs: [{ name: "input", elem_type: "float32", shape: ["batch", 4] }],
        outputs: [{ name: "logits", elem_type: "float32", shape: ["batch", 3] }],
        node_count: 5,
        op_types: ["Add", "MatMul", "Relu"],
        initializer_count: 4,
        parameter_count: 4 * 8 + 8 + 8 * 3 + 3,
        metadata_props: { author: "tests" }
      })
    }))

  it.effect("weights listed among an older export's inputs are not reported as inputs", () =>
    Effect.gen(function*() {
      const { metadata } = yield* onnx.encode(mlpOnnx({ initializersAsInputs: true }))
      expect((metadata.inputs as Array<{ name: string }>).map((i) => i.name)).toEqual(["input"])
    }))

  it("detection walks the top-level fields to the exact end: a model cut short is not ONNX", () => {
    expect(isOnnx(mlp)).toBe(true)
    expect(isOnnx(mlp.subarray(0, mlp.length - 1))).toBe(false)
  })
})

describe("safetensors metadata", () => {
  it.effect("lists tensors with dtypes and shapes, counts parameters, keeps __metadata__", () =>
    Effect.gen(function*() {
      const { metadata } = yield* safetensors.encode(st)
      expect(metadata).toEqual({
        format: "safetensors",
        framework: "pt",
        size: st.length,
        tensor_count: 3,
        parameter_count: 40 + 3 + 1,
        dtypes: ["BF16", "F32", "I64"],
        tensors: [
          { name: "embed.weight", dtype: "F32", shape: [10, 4] },
          { name: "head.bias", dtype: "BF16", shape: [3] },
          { name: "steps", dtype: "I64", shape: [] }
        ],
        header_metadata: { format: "pt" }
      })
    }))

  it.effect("a header that disagrees with the data is refused with the tensor named", () =>
    Effect.gen(function*() {
      const err = yield* Effect.flip(safetensors.decode({ contentType: "application/vnd.safetensors", application: "model", metadata: {}, body: badOffsets }))
      expect(err.reason).toBe("Invalid")
      expect(err.message).toContain('tensor "embed.weight"')
    }))
})

describe("model files", () => {
  it.effect("decode to a Model with the caller's framework and name", () =>
    Effect.gen(function*() {
      const encoded = yield* modelFileCodec.encode(modelFile(pt, { framework: "pytorch", name: "model.pt" }))
      expect(encoded.metadata).toEqual({ format: "file", framework: "pytorch", size: pt.length, name: "model.pt" })
      const model = yield* modelFileCodec.decode(encoded)
      expect(model).toMatchObject({ _tag: "Model", format: "file", framework: "pytorch" })
      expect(model.metadata.name).toBe("model.pt")
    }))

  it.effect("a missing or odd framework fails with Invalid naming the field", () =>
    Effect.gen(function*() {
      const err = yield* Effect.flip(modelFileCodec.encode(modelFile(pt, { framework: "" })))
      expect(err.reason).toBe("Invalid")
      expect(err.message).toContain("framework")
      const odd = yield* Effect.flip(modelFileCodec.encode(modelFile(pt, { framework: "../../etc" })))
      expect(odd.message).toContain("framework")
    }))
})

describe("AutoHandler with the model codecs", () => {
  const auto = AutoHandler.make(codecs)

  it.effect("detects ONNX and safetensors bytes; other bytes stay plain bytes", () =>
    Effect.gen(function*() {
      expect((yield* auto.encode(mlp)).codec).toBe("model/onnx")
      expect((yield* auto.encode(st)).codec).toBe("model/safetensors")
      expect((yield* auto.encode(pt)).codec).toBe("bytes/octet-stream")
      expect((yield* auto.encode(modelFile(pt, { framework: "pytorch" }))).codec).toBe("model/file")
    }))

  it.effect("a pulled model can be pushed again unchanged", () =>
    Effect.gen(function*() {
      const first = yield* auto.encode(mlp)
      const model = yield* auto.decode(first)
      const again = yield* auto.encode(model)
      expect(again.codec).toBe("model/onnx")
      expect(yield* Codec.bytes(again.body)).toBe(mlp)
    }))

  it.effect("without the plugin, a model payload names the package to install", () =>
    Effect.gen(function*() {
      const encoded = yield* auto.encode(st)
      const err = yield* Effect.flip(AutoHandler.make([]).decode(encoded))
      expect(err.reason).toBe("NotInstalled")
      expect(err.message).toContain(PLUGIN_NAME)
    }))

  it("the plugin descriptor matches the package and lists the codecs", () => {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"))
    expect(plugin.name).toBe(pkg.name)
    expect(plugin.version).toBe(pkg.version)
    expect(plugin.codecs?.map((c: Codec.Any) => c.id)).toEqual(["model/onnx", "model/safetensors", "model/file"])
  })
})
