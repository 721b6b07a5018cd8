/**
 * ONNX models: recognised by scanning the protobuf's top-level fields (cheap, without decoding
 * the graph); described by decoding the ONNX schema's ModelProto: input and output names,
 * element types and shapes, opsets, producer, operator types and parameter count.
 */
import { Codec, StackContentTypes } from "@dstack-ts/core"
import { Effect } from "effect"
import protobuf from "protobufjs"
import { selfDescribingCodec, type Model } from "./internal/Model.ts"
import { ELEM_TYPES, ModelProto } from "./internal/onnxSchema.ts"

const ID = "model/onnx"

// Top-level ModelProto fields and their protobuf wire types (0 varint, 2 length-delimited).
const MODEL_FIELDS: Readonly<Record<number, number>> = {
  1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2
}

/** A protobuf int64 (a Long, or a number) as a number. */
const num = (v: unknown): number => (typeof v === "object" && v !== null ? Number((v as { toNumber(): number }).toNumber()) : Number(v ?? 0))

/**
 * Is this a serialized ONNX ModelProto? Walks the top-level fields, skipping their contents:
 * every field must be a known ModelProto field with its wire type, the walk must end exactly
 * at the end, and an IR version and a graph must be present.
 */
export const isOnnx = (o: unknown): o is Uint8Array => {
  if (!(o instanceof Uint8Array) || o.length < 4 || o[0] !== 0x08) return false
  try {
    const reader = protobuf.Reader.create(o)
    let graph = false
    let ir = false
    while (reader.pos < reader.len) {
      const tag = reader.uint32()
      const field = tag >>> 3
      const wire = tag & 7
      if (MODEL_FIELDS[field] !== wire) return false
      if (field === 1) ir = num(reader.int64()) > 0
      else {
        if (field === 7) graph = true
        reader.skipType(wire)
      }
    }
    return ir && graph && reader.pos === reader.len
  } catch {
    return false
  }
}

interface Dim {
  dimValue?: number | { toNumber(): number }
  dimParam?: string
}
interface ValueInfo {
  name?: string
  type?: { tensorType?: { elemType?: number; shape?: { dim?: Array<Dim> } }; sequenceType?: unknown; mapType?: unknown }
}

const describeValue = (v: ValueInfo): Codec.Json => {
  const t = v.type
  if (t?.tensorType) {
    const tt = t.tensorType
    return {
      name: v.name ?? "",
      elem_type: ELEM_TYPES[tt.elemType ?? 0] ?? `type ${tt.elemType ?? 0}`,
      // A dimension is a number, a symbolic name ("batch"), or null when unknown.
      shape: tt.shape ? (tt.shape.dim ?? []).map((d) => (d.dimParam ? d.dimParam : d.dimValue !== undefined ? num(d.dimValue) : null)) : null
    }
  }
  return { name: v.name ?? "", kind: t?.sequenceType ? "sequence" : t?.mapType ? "map" : "unknown" }
}

/** ONNX metadata from the decoded ModelProto. */
const describeOnnx = (bytes: Uint8Array): Codec.Metadata => {
  const m = ModelProto.toObject(ModelProto.decode(bytes), { defaults: false, longs: Number }) as {
    irVersion?: number
    producerName?: string
    producerVersion?: string
    modelVersion?: number
    opsetImport?: Array<{ domain?: string; version?: number }>
    metadataProps?: Array<{ key?: string; value?: string }>
    graph?: {
      name?: string
      node?: Array<{ opType?: string }>
      initializer?: Array<{ name?: string; dims?: Array<number> }>
      input?: Array<ValueInfo>
      output?: Array<ValueInfo>
    }
  }
  const g = m.graph ?? {}
  const initializers = new Set((g.initializer ?? []).map((t) => t.name))
  const opsets: Record<string, number> = {}
  for (const o of m.opsetImport ?? []) opsets[o.domain || "ai.onnx"] = num(o.version)
  const props: Record<string, string> = {}
  for (const p of m.metadataProps ?? []) if (p.key) props[p.key] = p.value ?? ""
  const meta: Record<string, Codec.Json> = {
    format: "onnx",
    framework: "onnx",
    ir_version: num(m.irVersion),
    opset: opsets,
    size: bytes.length,
    graph_name: g.name ?? "",
    // Older exporters list initializers among the inputs; those are weights, not inputs.
    inputs: (g.input ?? []).filter((v) => !initializers.has(v.name)).map(describeValue),
    outputs: (g.output ?? []).map(describeValue),
    node_count: (g.node ?? []).length,
    op_types: [...new Set((g.node ?? []).map((n) => n.opType ?? ""))].sort(),
    initializer_count: initializers.size,
    parameter_count: (g.initializer ?? []).reduce((n, t) => n + (t.dims ?? []).reduce((a, d) => a * num(d), 1), 0)
  }
  if (m.producerName) meta.producer_name = m.producerName
  if (m.producerVersion) meta.producer_version = m.producerVersion
  if (m.modelVersion) meta.model_version = num(m.modelVersion)
  if (Object.keys(props).length > 0) meta.metadata_props = props
  return meta
}

const read = (method: string, bytes: Uint8Array): Effect.Effect<Codec.Metadata, Codec.CodecError> =>
  isOnnx(bytes)
    ? Codec.attempt(ID, method, "Invalid", "corrupt ONNX model", () => describeOnnx(bytes))
    : Codec.fail(ID, method, "Invalid", "not an ONNX model: the bytes are not a serialized ModelProto with an IR version and a graph")

/** ONNX model bytes, or a pulled ONNX `Model`. */
export type OnnxInput = Uint8Array | Model

export const onnx: Codec.Codec<OnnxInput, Model> = selfDescribingCodec({
  id: ID,
  format: "onnx",
  contentType: StackContentTypes.ContentType.onnx,
  detect: isOnnx,
  // A protobuf with no magic number: recognised by its extension (accepts then walks the fields).
  fileTypes: [{ extensions: [".onnx"] }],
  read,
  framework: () => "onnx"
})
