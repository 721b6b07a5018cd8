// Model files for the tests. ONNX models are serialized with onnx-proto (the ONNX project's
// full onnx.proto compiled for protobufjs), independent of the plugin's own reader; the
// safetensors file is laid out by hand following the published format.
import onnxProto from "onnx-proto"

const { onnx } = onnxProto
const FLOAT = 1

const tensorInfo = (name: string, dims: Array<number | string>) => ({
  name,
  type: {
    tensorType: {
      elemType: FLOAT,
      shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) }
    }
  }
})

const weights = (name: string, dims: Array<number>) => ({
  name,
  dataType: FLOAT,
  dims,
  rawData: new Uint8Array(dims.reduce((a, d) => a * d, 1) * 4)
})

/** A two-layer perceptron: input [batch, 4] → 8 hidden (ReLU) → logits [batch, 3]. */
export const mlpOnnx = (options: { initializersAsInputs?: boolean } = {}): Uint8Array => {
  const initializer = [weights("W1", [4, 8]), weights("B1", [8]), weights("W2", [8, 3]), weights("B2", [3])]
  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: "pytorch",
    producerVersion: "2.1.0",
    modelVersion: 3,
    opsetImport: [{ domain: "", version: 17 }],
    metadataProps: [{ key: "author", value: "tests" }],
    graph: {
      name: "mlp",
      node: [
        { opType: "MatMul", input: ["input", "W1"], output: ["h0"] },
        { opType: "Add", input: ["h0", "B1"], output: ["h1"] },
        { opType: "Relu", input: ["h1"], output: ["h2"] },
        { opType: "MatMul", input: ["h2", "W2"], output: ["h3"] },
        { opType: "Add", input: ["h3", "B2"], output: ["logits"] }
      ],
      initializer,
      input: [
        tensorInfo("input", ["batch", 4]),
        ...(options.initializersAsInputs ? initializer.map((t) => tensorInfo(t.name, t.dims)) : [])
      ],
      output: [tensorInfo("logits", ["batch", 3])]
    }
  })
  return new Uint8Array(onnx.ModelProto.encode(model).finish())
}

/** A safetensors file: header JSON (with __metadata__) padded with spaces, then tensor data. */
export const safetensorsFile = (): Uint8Array => {
  const tensors: Array<[string, string, Array<number>, number]> = [
    ["embed.weight", "F32", [10, 4], 4],
    ["head.bias", "BF16", [3], 2],
    ["steps", "I64", [], 8]
  ]
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } }
  let at = 0
  for (const [name, dtype, shape, width] of tensors) {
    const size = shape.reduce((a, d) => a * d, 1) * width
    header[name] = { dtype, shape, data_offsets: [at, at + size] }
    at += size
  }
  let json = JSON.stringify(header)
  json += " ".repeat((8 - (json.length % 8)) % 8) // the format pads the header to 8 bytes
  const head = new TextEncoder().encode(json)
  const out = new Uint8Array(8 + head.length + at)
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true)
  out.set(head, 8)
  for (let i = 8 + head.length; i < out.length; i++) out[i] = i & 0xff
  return out
}
