// Plot samples written by other tools: Vega-Lite example specs (checked with vega-lite's
// compile), an SVG rendered by Vega, PNGs written by pngjs and a Plotly figure in the JSON
// form plotly.py's `fig.to_json()` writes.
import { PNG } from "pngjs"
import * as vega from "vega"
import { compile } from "vega-lite"

/** From the Vega-Lite example gallery: a simple bar chart. */
export const barChart = {
  $schema: "https://vega.github.io/schema/vega-lite/v5.json",
  description: "A simple bar chart with embedded data.",
  data: {
    values: [
      { a: "A", b: 28 }, { a: "B", b: 55 }, { a: "C", b: 43 }, { a: "D", b: 91 },
      { a: "E", b: 81 }, { a: "F", b: 53 }, { a: "G", b: 19 }, { a: "H", b: 87 }, { a: "I", b: 52 }
    ]
  },
  mark: "bar",
  encoding: {
    x: { field: "a", type: "nominal", axis: { labelAngle: 0 } },
    y: { field: "b", type: "quantitative" }
  }
}

/** From the gallery: a layered line chart with points, no $schema, sized. */
export const layered = {
  title: { text: "Stock prices" },
  width: 400,
  height: "300px",
  data: { values: [{ date: "2024-01-01", price: 10 }, { date: "2024-02-01", price: 12 }] },
  encoding: { x: { field: "date", type: "temporal" }, y: { field: "price", type: "quantitative" } },
  layer: [{ mark: "line" }, { mark: { type: "point", filled: true } }]
}

/** A faceted scatter plot (composition via facet/spec). */
export const faceted = {
  $schema: "https://vega.github.io/schema/vega-lite/v6.json",
  data: { values: [{ x: 1, y: 2, g: "a" }, { x: 2, y: 3, g: "b" }] },
  facet: { column: { field: "g", type: "nominal" } },
  spec: { mark: "point", encoding: { x: { field: "x", type: "quantitative" }, y: { field: "y", type: "quantitative" } } }
}

export const vegaLiteExamples = { barChart, layered, faceted }

/** Throws unless vega-lite compiles every example to a Vega spec. */
export const compileAll = (): Array<unknown> => Object.values(vegaLiteExamples).map((s) => compile(structuredClone(s) as never).spec)

/** An SVG rendered headlessly by Vega from the bar chart. */
export const vegaSvg: string = await new vega.View(vega.parse(compile(structuredClone(barChart) as never).spec), { renderer: "none" }).toSVG()

/** A PNG written by pngjs: a w×h RGBA gradient. */
export const pngOf = (width: number, height: number, colorType: 2 | 6 = 6): Uint8Array => {
  const png = new PNG({ width, height, colorType, inputColorType: 6 })
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4
      png.data[i] = x * 7
      png.data[i + 1] = y * 11
      png.data[i + 2] = 128
      png.data[i + 3] = 255
    }
  }
  return new Uint8Array(PNG.sync.write(png, { colorType }))
}

/** A Plotly figure as plotly.py's `fig.to_json()` writes it (trimmed of the template). */
export const plotlyFigure = {
  data: [
    { type: "bar", name: "sales", x: ["Q1", "Q2", "Q3"], y: [10, 15, 13], marker: { color: "#636efa" } },
    { type: "scatter", mode: "lines+markers", name: "target", x: ["Q1", "Q2", "Q3"], y: [12, 12, 14] }
  ],
  layout: { title: { text: "Quarterly sales" }, width: 640, height: 480, xaxis: { title: { text: "quarter" } } }
}
