/**
 * Vega-Lite specifications: recognised by a `$schema` naming vega-lite, or by the shape of a
 * spec (`mark`, or a composition: `layer`, `concat`, `facet`, `repeat` …). Stored as JSON with
 * a content type carrying the Vega-Lite major version; decoded back to the same object.
 */
import { Codec, StackContentTypes } from "@dstack-ts/core"
import { Effect } from "effect"
import { defined, isJsonObject, jsonBytes, parseJsonFile, pixels, readJsonObject } from "./internal/json.ts"

const ID = "plot/vega-lite"

/** A Vega-Lite specification (a JSON object). */
export type VegaLiteSpec = Record<string, unknown>

const COMPOSITIONS = ["layer", "hconcat", "vconcat", "concat", "repeat", "facet", "spec"]

const schemaVersion = (spec: VegaLiteSpec): number | undefined => {
  const m = typeof spec.$schema === "string" ? /vega-lite\/v(\d+)/.exec(spec.$schema) : null
  return m ? Number(m[1]) : undefined
}

/** Does this JSON object look like a Vega-Lite spec (and not a Vega or Plotly one)? */
export const isVegaLiteSpec = (o: unknown): o is VegaLiteSpec => {
  if (!isJsonObject(o)) return false
  if (typeof o.$schema === "string") return /vega-lite/.test(o.$schema)
  if ("data" in o && Array.isArray(o.data) && "layout" in o) return false // a Plotly figure
  if (typeof o.mark === "string" || (typeof o.mark === "object" && o.mark !== null)) return true
  return COMPOSITIONS.some((k) => k in o) && ("encoding" in o || "data" in o || "spec" in o || "layer" in o)
}

const contentTypeFor = (version: number | undefined) => `application/vnd.vegalite.v${version ?? 5}+json`

const describeSpec = (spec: VegaLiteSpec): Codec.Metadata => {
  const mark = typeof spec.mark === "string"
    ? spec.mark
    : typeof spec.mark === "object" && spec.mark !== null && typeof (spec.mark as { type?: unknown }).type === "string"
    ? (spec.mark as { type: string }).type
    : undefined
  const title = typeof spec.title === "string"
    ? spec.title
    : typeof spec.title === "object" && spec.title !== null && typeof (spec.title as { text?: unknown }).text === "string"
    ? (spec.title as { text: string }).text
    : undefined
  const version = schemaVersion(spec)
  return defined({
    kind: "vega-lite",
    version,
    mark,
    composition: COMPOSITIONS.find((k) => k in spec),
    title,
    width: pixels(spec.width),
    height: pixels(spec.height)
  })
}

export const vegaLite: Codec.Codec<VegaLiteSpec> = Codec.make<VegaLiteSpec>({
  plugin: "@dstack-ts/handler-plot",
  id: ID,
  application: StackContentTypes.Application.plot,
  contentTypes: [
    StackContentTypes.ContentType.vegaLite,
    "application/vnd.vegalite.v6+json",
    "application/vnd.vegalite.v4+json",
    "application/vnd.vegalite.v3+json"
  ],
  // A plain .json file is claimed too; `accepts` on the parsed value decides.
  fileTypes: [{ extensions: [".vl.json", ".vega-lite.json", ".json"] }],
  fromFile: parseJsonFile,
  accepts: isVegaLiteSpec,
  encode: (spec) =>
    Effect.succeed({
      contentType: contentTypeFor(schemaVersion(spec)),
      application: StackContentTypes.Application.plot,
      metadata: describeSpec(spec),
      body: jsonBytes(spec)
    }),
  decode: (encoded) => readJsonObject(ID, encoded.body, "Vega-Lite spec", isVegaLiteSpec)
})
