/**
 * PNG images: recognised by the PNG signature. Stored verbatim as `image/png`; the metadata
 * holds width, height, bit depth and colour type from the IHDR chunk, whose CRC is checked so
 * that a corrupt header is refused rather than served.
 */
import { Codec, StackContentTypes } from "@dstack-ts/core"
import { Effect } from "effect"

const ID = "plot/png"

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]

/** Starts with the 8-byte PNG signature. */
export const isPng = (o: unknown): o is Uint8Array =>
  o instanceof Uint8Array && o.length >= 8 && SIGNATURE.every((b, i) => o[i] === b)

/**
 * `zlib.crc32` where the codec runs on Node or Deno, found through `process.getBuiltinModule`
 * so that no `node:` import is needed and the codec still loads in a browser; undefined there.
 */
const zlibCrc32 = ((): ((data: Uint8Array) => number) | undefined => {
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process
  const zlib = proc?.getBuiltinModule?.("node:zlib") as { crc32?: (data: Uint8Array) => number } | undefined
  return typeof zlib?.crc32 === "function" ? zlib.crc32 : undefined
})()

/** PNG's CRC-32 (ISO 3309) computed with a table: the browser's path, where zlib is absent. */
let crcTable: Uint32Array | undefined
export const crc32Table = (bytes: Uint8Array): number => {
  if (crcTable === undefined) {
    crcTable = new Uint32Array(256)
    for (let n = 0; n < 256; n++) {
      let c = n
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
      crcTable[n] = c >>> 0
    }
  }
  let c = 0xffffffff
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]) & 0xff] ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

const crc32 = (bytes: Uint8Array): number => (zlibCrc32 !== undefined ? zlibCrc32(bytes) : crc32Table(bytes))

/** Which CRC-32 the codec uses here: `zlib` on Node and Deno, `table` in a browser. */
export const crc32Source: "zlib" | "table" = zlibCrc32 !== undefined ? "zlib" : "table"

const COLOR_TYPES: Record<number, string> = {
  0: "grayscale",
  2: "rgb",
  3: "indexed",
  4: "grayscale+alpha",
  6: "rgba"
}

/** Reads and checks the IHDR chunk that must follow the signature. */
const readHeader = (method: string, b: Uint8Array): Effect.Effect<Codec.Metadata, Codec.CodecError> => {
  if (!isPng(b)) return Codec.fail(ID, method, "Invalid", "not a PNG image: the PNG signature is missing")
  if (b.length < 33) return Codec.fail(ID, method, "Invalid", "corrupt PNG: truncated before the end of IHDR")
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength)
  const length = view.getUint32(8)
  const type = String.fromCharCode(b[12], b[13], b[14], b[15])
  if (type !== "IHDR" || length !== 13) {
    return Codec.fail(ID, method, "Invalid", `corrupt PNG: the first chunk is ${JSON.stringify(type)}, not a 13-byte IHDR`)
  }
  if (crc32(b.subarray(12, 29)) !== view.getUint32(29)) {
    return Codec.fail(ID, method, "Invalid", "corrupt PNG: the IHDR checksum does not match")
  }
  const width = view.getUint32(16)
  const height = view.getUint32(20)
  if (width === 0 || height === 0) return Codec.fail(ID, method, "Invalid", "corrupt PNG: zero width or height")
  return Effect.succeed({
    kind: "png",
    width,
    height,
    bit_depth: b[24],
    color_type: COLOR_TYPES[b[25]] ?? `unknown (${b[25]})`,
    size: b.length
  })
}

export const png: Codec.Codec<Uint8Array> = Codec.make<Uint8Array>({
  plugin: "@dstack-ts/handler-plot",
  id: ID,
  application: StackContentTypes.Application.plot,
  contentTypes: [StackContentTypes.ContentType.png],
  fileTypes: [{ extensions: [".png"], magic: [{ bytes: SIGNATURE }] }],
  accepts: isPng,
  encode: (image) =>
    Effect.map(readHeader("encode", image), (metadata) => ({
      contentType: StackContentTypes.ContentType.png,
      application: StackContentTypes.Application.plot,
      metadata,
      body: image
    })),
  decode: (encoded) =>
    Effect.flatMap(Codec.bytes(encoded.body), (bytes) => Effect.as(readHeader("decode", bytes), bytes))
})
