/**
 * A codec plugin: pushes GeoJSON FeatureCollections to a stack as `application/geo+json`
 * (RFC 7946) with metadata a viewer can show without decoding (feature count, bounding box),
 * and pulls them back. A template for codecs of other data formats.
 */
import { Codec, definePlugin } from "@dstack-ts/core"
import { Effect } from "effect"

export const PLUGIN_NAME = "@acme/handler-geojson"
export const CONTENT_TYPE = "application/geo+json"
/** The application family: stored with the payload, it tells a pull which decoder to pick. */
export const APPLICATION = "geojson"

export type Position = ReadonlyArray<number>
export interface Geometry {
  readonly type: string
  readonly coordinates?: unknown
  readonly geometries?: ReadonlyArray<Geometry>
}
export interface Feature {
  readonly type: "Feature"
  readonly geometry: Geometry | null
  readonly properties: Record<string, unknown> | null
  readonly id?: string | number
}
export interface FeatureCollection {
  readonly type: "FeatureCollection"
  readonly features: ReadonlyArray<Feature>
  readonly bbox?: ReadonlyArray<number>
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** A cheap shape check: a FeatureCollection whose every feature is a Feature. */
export const isFeatureCollection = (value: unknown): value is FeatureCollection =>
  isObject(value) &&
  value.type === "FeatureCollection" &&
  Array.isArray(value.features) &&
  value.features.every((f) => isObject(f) && f.type === "Feature" && (f.geometry === null || isObject(f.geometry)))

/** Every position of a geometry, however deeply its coordinates nest. */
const positions = (geometry: Geometry | null): Array<Position> => {
  if (geometry === null) return []
  if (geometry.geometries) return geometry.geometries.flatMap(positions)
  const out: Array<Position> = []
  const walk = (c: unknown): void => {
    if (!Array.isArray(c)) return
    if (typeof c[0] === "number") out.push(c as Position)
    else c.forEach(walk)
  }
  walk(geometry.coordinates)
  return out
}

/** `[minLon, minLat, maxLon, maxLat]`, or null for a collection without positions. */
export const boundingBox = (fc: FeatureCollection): [number, number, number, number] | null => {
  const all = fc.features.flatMap((f) => positions(f.geometry))
  if (all.length === 0) return null
  const lon = all.map((p) => p[0])
  const lat = all.map((p) => p[1])
  return [Math.min(...lon), Math.min(...lat), Math.max(...lon), Math.max(...lat)]
}

/** The codec. `Codec.make` refuses what `accepts` rejects and turns a throw into `Unknown`. */
export const geojson = Codec.make<FeatureCollection>({
  id: `${APPLICATION}/feature-collection`,
  application: APPLICATION,
  contentTypes: [CONTENT_TYPE],
  // `dstack push STACK map.geojson` picks this codec once the plugin is installed.
  fileTypes: [{ extensions: [".geojson"] }],
  fromFile: (bytes) => JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as unknown,
  accepts: isFeatureCollection,
  encode: (fc) =>
    Effect.succeed({
      contentType: CONTENT_TYPE,
      application: APPLICATION,
      // Metadata is stored as JSON beside the bytes, so only JSON values go here.
      metadata: { features: fc.features.length, bbox: boundingBox(fc), plugin: PLUGIN_NAME },
      body: new TextEncoder().encode(JSON.stringify(fc))
    }),
  // The body may arrive whole or streamed in chunks: `Codec.bytes` collects it either way.
  // Corrupt bytes fail with `Invalid`, never with a thrown exception.
  decode: (encoded) =>
    Effect.gen(function*() {
      const bytes = yield* Codec.bytes(encoded.body)
      const value = yield* Codec.attempt(`${APPLICATION}/feature-collection`, "decode", "Invalid", "payload is not JSON", () =>
        JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as unknown)
      return isFeatureCollection(value)
        ? value
        : yield* Codec.fail(`${APPLICATION}/feature-collection`, "decode", "Invalid", "payload is JSON but not a GeoJSON FeatureCollection")
    })
})

/**
 * The plugin. Installed in a server build (or a client's AutoHandler), it comes before core's
 * JSON codec, so a FeatureCollection is stored as GeoJSON rather than as plain JSON.
 */
export default definePlugin({
  name: PLUGIN_NAME,
  version: "0.1.0",
  core: "^0.1.0",
  description: "GeoJSON FeatureCollections as application/geo+json",
  codecs: [geojson]
})
