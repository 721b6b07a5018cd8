/**
 * @acme/dstack-codec-npy — a third-party codec plugin for dstack-ts: NumPy `.npy` arrays.
 * `dstack push STACK x.npy` finds it once it is installed in the project (its package.json
 * marks it as a plugin), and recognises `.npy` bytes by their magic number under any name.
 */
import { Codec, definePlugin } from "@dstack-ts/core"
import { Effect } from "effect"
import { checkArray, hasNpyMagic, isNdArray, MAGIC, type NdArray, readNpy, writeNpy } from "./Npy.ts"

export { checkArray, isNdArray, itemSize, type NdArray, ndarray, readNpy, writeNpy } from "./Npy.ts"

export const PLUGIN_NAME = "@acme/dstack-codec-npy"
export const PLUGIN_VERSION = "0.1.0"
export const CONTENT_TYPE = "application/x-npy"
const ID = "ndarray/npy"

/** A `.npy` file's bytes that read as an array. */
const isNpyFile = (o: unknown): o is Uint8Array => {
  if (!(o instanceof Uint8Array) || !hasNpyMagic(o)) return false
  try {
    readNpy(o)
    return true
  } catch {
    return false
  }
}

const read = (method: string, bytes: Uint8Array) =>
  Codec.attempt(ID, method, "Invalid", "not a readable .npy file", () => readNpy(bytes))

const describe = (a: NdArray, version: string, size: number): Codec.Metadata => ({
  plugin: PLUGIN_NAME,
  dtype: a.dtype,
  shape: [...a.shape],
  fortran_order: a.fortranOrder,
  npy_version: version,
  size
})

/** Encodes `.npy` bytes as they are and arrays as version 1.0 files; decodes to an `NdArray`. */
export const npy: Codec.Codec<NdArray | Uint8Array, NdArray> = Codec.make<NdArray | Uint8Array, NdArray>({
  id: ID,
  application: "ndarray",
  contentTypes: [CONTENT_TYPE],
  fileTypes: [{ extensions: [".npy"], magic: [{ bytes: MAGIC }] }],
  accepts: (o) => isNpyFile(o) || (isNdArray(o) && checkArray(o) === undefined),
  encode: (input) =>
    Effect.gen(function*() {
      const body = input instanceof Uint8Array ? input : writeNpy(input)
      const array = yield* read("encode", body)
      return { contentType: CONTENT_TYPE, application: "ndarray", metadata: describe(array, array.version, body.length), body }
    }),
  decode: (encoded) =>
    Effect.flatMap(Codec.bytes(encoded.body), (bytes) =>
      Effect.map(read("decode", bytes), ({ version: _version, ...array }): NdArray => array))
})

export default definePlugin({
  name: PLUGIN_NAME,
  version: PLUGIN_VERSION,
  core: "^0.1.0",
  description: "NumPy .npy arrays as stack objects.",
  codecs: [npy]
})
