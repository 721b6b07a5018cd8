/**
 * Plotly figures: the JSON form `{ data: [traces], layout }` that Plotly libraries write
 * (`fig.to_json()` in Python, `Plotly.newPlot(el, data, layout)` in JavaScript).
 */
import { Codec, StackContentTypes } from "@dstack-ts/core"
import { Effect } from "effect"
import { defined, isJsonObject, isPlainObject, jsonBytes, parseJsonFile, pixels, readJsonObject } from "./internal/json.ts"

const ID = "plot/plotly"

/** A Plotly figure: traces and an optional layout (and `frames`, `config`). */
export interface PlotlyFigure {
  readonly data: ReadonlyArray<Record<string, unknown>>
  readonly layout?: Record<string, unknown>
  readonly [key: string]: unknown
}

const TRACE_HINTS = ["type", "x", "y", "z", "values", "labels", "lat", "lon"]

/** A JSON object with `data`: an array of traces (objects), and a `layout` object if any. */
export const isPlotlyFigure = (o: unknown): o is PlotlyFigure => {
  if (!isJsonObject(o) || !Array.isArray(o.data)) return false
  if ("layout" in o && !isPlainObject(o.layout)) return false
  if ("$schema" in o || "mark" in o) return false
  const traces = o.data as Array<unknown>
  if (!traces.every(isPlainObject)) return false
  // Without a layout, ask that the traces look like traces rather than any list of records.
  return "layout" in o || (traces.length > 0 && traces.every((t) => TRACE_HINTS.some((k) => k in (t as object))))
}

const describeFigure = (fig: PlotlyFigure): Codec.Metadata => {
  const layout = fig.layout ?? {}
  const t = layout.title
  const title = typeof t === "string"
    ? t
    : isPlainObject(t) && typeof t.text === "string"
    ? t.text
    : undefined
  return defined({
    kind: "plotly",
    traces: fig.data.length,
    trace_types: [...new Set(fig.data.map((tr) => (typeof tr.type === "string" ? tr.type : "scatter")))],
    title,
    width: pixels(layout.width),
    height: pixels(layout.height)
  })
}

export const plotly: Codec.Codec<PlotlyFigure> = Codec.make<PlotlyFigure>({
  plugin: "@dstack-ts/handler-plot",
  id: ID,
  application: StackContentTypes.Application.plot,
  contentTypes: [StackContentTypes.ContentType.plotly],
  // A plain .json file is claimed too; `accepts` on the parsed value decides.
  fileTypes: [{ extensions: [".plotly.json", ".json"] }],
  fromFile: parseJsonFile,
  accepts: isPlotlyFigure,
  encode: (fig) =>
    Effect.succeed({
      contentType: StackContentTypes.ContentType.plotly,
      application: StackContentTypes.Application.plot,
      metadata: describeFigure(fig),
      body: jsonBytes(fig)
    }),
  decode: (encoded) =>
    Effect.map(
      readJsonObject(ID, encoded.body, "Plotly figure", isPlotlyFigure),
      (o) => o as unknown as PlotlyFigure
    )
})
