/**
 * The NumPy `.npy` format (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
 * the magic `\x93NUMPY`, a version, a little-endian header length (2 bytes in 1.0, 4 in 2.0 and
 * 3.0), a Python dict literal `{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }`
 * padded with spaces to a multiple of 64 bytes and ended by `\n`, then the array's bytes.
 */

/** An n-dimensional array as `.npy` holds it: the element type, the shape and the raw bytes. */
export interface NdArray {
  readonly _tag: "NdArray"
  /** A NumPy type string: byte order (`<`, `>`, `|`), kind and size, e.g. `<f8`, `|u1`, `<U5`. */
  readonly dtype: string
  readonly shape: ReadonlyArray<number>
  /** True when the bytes are in column-major (Fortran) order. */
  readonly fortranOrder: boolean
  /** The elements' bytes, `count × itemsize` of them. */
  readonly data: Uint8Array
}

export const MAGIC = "\x93NUMPY"
const MAGIC_BYTES = Array.from(MAGIC, (c) => c.charCodeAt(0))

/** The kinds `.npy` files store without Python pickles: bool, ints, floats, complex, bytes, unicode. */
const DTYPE = /^([<>|=])([biufcSU])(\d+)$/

/** Bytes per element of a dtype, or an error message. */
export const itemSize = (dtype: string): number | string => {
  const m = DTYPE.exec(dtype)
  if (m === null) return `unsupported dtype ${JSON.stringify(dtype)} (object arrays and records are not read)`
  const n = Number(m[3])
  return m[2] === "U" ? 4 * n : n
}

const count = (shape: ReadonlyArray<number>): number => shape.reduce((a, d) => a * d, 1)

export const isNdArray = (o: unknown): o is NdArray =>
  typeof o === "object" && o !== null && (o as NdArray)._tag === "NdArray" && (o as NdArray).data instanceof Uint8Array &&
  typeof (o as NdArray).dtype === "string" && Array.isArray((o as NdArray).shape) && typeof (o as NdArray).fortranOrder === "boolean"

/** Why an array's parts do not fit together, or undefined when they do. */
export const checkArray = (a: NdArray): string | undefined => {
  const size = itemSize(a.dtype)
  if (typeof size === "string") return size
  if (!a.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return `shape ${JSON.stringify(a.shape)} is not a list of sizes`
  const want = count(a.shape) * size
  return a.data.length === want ? undefined : `shape ${JSON.stringify(a.shape)} of ${a.dtype} needs ${want} bytes, the data has ${a.data.length}`
}

/** Starts with the `.npy` magic number. */
export const hasNpyMagic = (b: Uint8Array): boolean => b.length >= 6 && MAGIC_BYTES.every((m, i) => b[i] === m)

/** Reads a `.npy` file; throws an Error saying what is wrong. */
export const readNpy = (b: Uint8Array): NdArray & { readonly version: string } => {
  if (!hasNpyMagic(b)) throw new Error("not a .npy file: the \\x93NUMPY magic is missing")
  if (b.length < 10) throw new Error("truncated .npy header")
  const major = b[6]
  const minor = b[7]
  if (major < 1 || major > 3) throw new Error(`unknown .npy version ${major}.${minor}`)
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength)
  const wide = major >= 2
  if (wide && b.length < 12) throw new Error("truncated .npy header")
  const headerLength = wide ? view.getUint32(8, true) : view.getUint16(8, true)
  const start = wide ? 12 : 10
  if (start + headerLength > b.length) throw new Error(`the header says ${headerLength} bytes, the file ends before`)
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(b.subarray(start, start + headerLength))
  const descr = /['"]descr['"]\s*:\s*['"]([^'"]*)['"]/.exec(header)?.[1]
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(header)?.[1]
  const shapeText = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(header)?.[1]
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new Error(`the header is not a dict with descr, fortran_order and shape: ${JSON.stringify(header.trim())}`)
  }
  const shape = shapeText.split(",").map((s) => s.trim()).filter((s) => s !== "").map((s) => {
    if (!/^\d+L?$/.test(s)) throw new Error(`shape (${shapeText}) is not a tuple of sizes`)
    return Number.parseInt(s, 10)
  })
  const array: NdArray = { _tag: "NdArray", dtype: descr, shape, fortranOrder: fortran === "True", data: b.slice(start + headerLength) }
  const why = checkArray(array)
  if (why !== undefined) throw new Error(why)
  return { ...array, version: `${major}.${minor}` }
}

/** Writes an array as a version 1.0 `.npy` file (2.0 when the header does not fit 65535 bytes). */
export const writeNpy = (a: NdArray): Uint8Array => {
  const shape = a.shape.length === 1 ? `(${a.shape[0]},)` : `(${a.shape.join(", ")})`
  const dict = `{'descr': '${a.dtype}', 'fortran_order': ${a.fortranOrder ? "True" : "False"}, 'shape': ${shape}, }`
  const fits = dict.length + 64 <= 0xffff
  const start = fits ? 10 : 12
  const padded = Math.ceil((start + dict.length + 1) / 64) * 64 - start
  const header = dict.padEnd(padded - 1, " ") + "\n"
  const out = new Uint8Array(start + header.length + a.data.length)
  out.set(MAGIC_BYTES, 0)
  out[6] = fits ? 1 : 2
  out[7] = 0
  const view = new DataView(out.buffer)
  if (fits) view.setUint16(8, header.length, true)
  else view.setUint32(8, header.length, true)
  for (let i = 0; i < header.length; i++) out[start + i] = header.charCodeAt(i)
  out.set(a.data, start + header.length)
  return out
}

type Numeric = Float64Array | Float32Array | Int32Array | Int16Array | Int8Array | Uint32Array | Uint16Array | Uint8Array | BigInt64Array | BigUint64Array

const DTYPES: ReadonlyArray<readonly [new (...args: Array<never>) => Numeric, string]> = [
  [Float64Array, "f8"], [Float32Array, "f4"], [Int32Array, "i4"], [Int16Array, "i2"], [Int8Array, "i1"],
  [Uint32Array, "u4"], [Uint16Array, "u2"], [Uint8Array, "u1"], [BigInt64Array, "i8"], [BigUint64Array, "u8"]
]

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/**
 * An array from a typed array and a shape (C order), e.g. `ndarray(Float64Array.of(1, 2, 3, 4), [2, 2])`.
 * The element type comes from the typed array; the bytes are copied.
 */
export const ndarray = (values: Numeric, shape: ReadonlyArray<number> = [values.length]): NdArray => {
  const kind = DTYPES.find(([ctor]) => values instanceof ctor)?.[1]
  if (kind === undefined) throw new TypeError("ndarray() takes a typed array")
  const order = kind.endsWith("1") ? "|" : littleEndian ? "<" : ">"
  const array: NdArray = {
    _tag: "NdArray",
    dtype: `${order}${kind}`,
    shape: [...shape],
    fortranOrder: false,
    data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength).slice()
  }
  const why = checkArray(array)
  if (why !== undefined) throw new RangeError(why)
  return array
}
