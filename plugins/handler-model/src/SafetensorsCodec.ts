/**
 * safetensors files (Hugging Face): an 8-byte little-endian header length, a JSON header
 * naming each tensor's dtype, shape and byte range, then the tensor data. The header is
 * checked against the file (offsets inside the data, sizes matching dtype × shape) and
 * summarised in the metadata; the bytes are stored verbatim.
 */
import { Codec, StackContentTypes } from "@dstack-ts/core"
import { selfDescribingCodec, type Model } from "./internal/Model.ts"

const ID = "model/safetensors"

/** Bytes per element of each safetensors dtype (sub-byte types are rounded where packed). */
const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1, I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8, C64: 8
}

/** At most this many tensors are listed one by one in the metadata; all are counted. */
const LISTED = 256

interface Tensor {
  readonly name: string
  readonly dtype: string
  readonly shape: ReadonlyArray<number>
  readonly offsets: readonly [number, number]
}

/** Header length and JSON text, if the bytes are laid out like a safetensors file. */
const headerOf = (b: Uint8Array): { length: number; json: string } | undefined => {
  if (b.length < 10) return undefined
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength)
  const length = Number(view.getBigUint64(0, true))
  if (length < 2 || length > b.length - 8 || b[8] !== 0x7b /* { */) return undefined
  try {
    return { length, json: new TextDecoder("utf-8", { fatal: true }).decode(b.subarray(8, 8 + length)) }
  } catch {
    return undefined
  }
}

/** An 8-byte little-endian header length of at least 2, then `{"` (the header's first key). */
const headerStart = (b: Uint8Array): boolean => {
  if (b.length < 10 || b[8] !== 0x7b || b[9] !== 0x22) return false
  const length = new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(0, true)
  return length >= 2n && length < 2n ** 40n
}

/** Parses and checks the header; throws an Error that says what is wrong. */
const parse = (b: Uint8Array): { tensors: Array<Tensor>; extra: Record<string, string> } => {
  const header = headerOf(b)
  if (header === undefined) throw new Error("no safetensors header (8-byte length, then a JSON object)")
  const parsed = JSON.parse(header.json) as unknown
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("the header is not a JSON object")
  const dataSize = b.length - 8 - header.length
  const tensors: Array<Tensor> = []
  let extra: Record<string, string> = {}
  for (const [name, entry] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === "__metadata__") {
      extra = entry as Record<string, string>
      continue
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown }
    const shape = e.shape
    const offsets = e.data_offsets
    if (typeof e.dtype !== "string") throw new Error(`tensor "${name}": dtype is missing`)
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw new Error(`tensor "${name}": shape is not a list of sizes`)
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(Number.isInteger)) throw new Error(`tensor "${name}": data_offsets is not [begin, end]`)
    const [begin, end] = offsets as [number, number]
    if (begin < 0 || end < begin || end > dataSize) throw new Error(`tensor "${name}": data_offsets [${begin}, ${end}] fall outside the ${dataSize} data bytes`)
    const width = DTYPE_BYTES[e.dtype]
    const count = (shape as Array<number>).reduce((a, d) => a * d, 1)
    if (width !== undefined && end - begin !== count * width) {
      throw new Error(`tensor "${name}": ${e.dtype} ${JSON.stringify(shape)} needs ${count * width} bytes, data_offsets give ${end - begin}`)
    }
    tensors.push({ name, dtype: e.dtype, shape: shape as Array<number>, offsets: [begin, end] })
  }
  return { tensors, extra }
}

/** Does this look like a safetensors file (length prefix and a JSON header that parses)? */
export const isSafetensors = (o: unknown): o is Uint8Array => {
  if (!(o instanceof Uint8Array) || headerOf(o) === undefined) return false
  try {
    parse(o)
    return true
  } catch {
    return false
  }
}

const describe = (b: Uint8Array): Codec.Metadata => {
  const { tensors, extra } = parse(b)
  const dtypes = [...new Set(tensors.map((t) => t.dtype))].sort()
  const meta: Record<string, Codec.Json> = {
    format: "safetensors",
    framework: typeof extra.format === "string" && extra.format !== "" ? extra.format : "safetensors",
    size: b.length,
    tensor_count: tensors.length,
    parameter_count: tensors.reduce((n, t) => n + t.shape.reduce((a, d) => a * d, 1), 0),
    dtypes,
    tensors: tensors.slice(0, LISTED).map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape] }))
  }
  if (Object.keys(extra).length > 0) meta.header_metadata = extra
  return meta
}

const read = (method: string, bytes: Uint8Array) =>
  Codec.attempt(ID, method, "Invalid", "not a valid safetensors file", () => describe(bytes))

/** safetensors bytes, or a pulled safetensors `Model`. */
export type SafetensorsInput = Uint8Array | Model

export const safetensors: Codec.Codec<SafetensorsInput, Model> = selfDescribingCodec({
  id: ID,
  format: "safetensors",
  contentType: StackContentTypes.ContentType.safetensors,
  detect: isSafetensors,
  fileTypes: [{ extensions: [".safetensors"] }],
  // The leading bytes are a little-endian header length and the start of a JSON object.
  sniff: (head) => headerStart(head),
  read,
  framework: (metadata) => String(metadata.framework)
})
