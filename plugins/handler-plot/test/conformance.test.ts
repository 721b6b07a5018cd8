// Codec conformance for the plot codecs, with samples written by other tools.
import { testCodec } from "@dstack-ts/core/testing"
import { plotly, png, svg, vegaLite } from "../src/index.ts"
import { barChart, faceted, layered, plotlyFigure, pngOf, vegaSvg } from "./fixtures.ts"

const enc = new TextEncoder()

testCodec("plot/vega-lite", vegaLite, {
  accepted: [
    { name: "the gallery bar chart", value: barChart },
    { name: "a layered chart without $schema", value: layered },
    { name: "a faceted chart", value: faceted }
  ],
  rejected: [
    { name: "a Plotly figure", value: plotlyFigure },
    { name: "a Vega (not Vega-Lite) spec", value: { $schema: "https://vega.github.io/schema/vega/v5.json", marks: [] } },
    { name: "a plain object", value: { a: 1 } },
    { name: "a spec holding a Date", value: { ...barChart, when: new Date(0) } }
  ],
  corrupt: [
    { name: "truncated JSON", body: enc.encode('{"mark": "bar", "enc') },
    { name: "JSON that is not a spec", body: enc.encode('{"hello": "world"}') }
  ]
})

testCodec("plot/plotly", plotly, {
  accepted: [
    { name: "a figure with a layout", value: plotlyFigure },
    { name: "traces only", value: { data: [{ type: "pie", values: [1, 2], labels: ["a", "b"] }] } }
  ],
  rejected: [
    { name: "a Vega-Lite spec", value: barChart },
    { name: "data that is not traces", value: { data: [{ name: "x" }] } },
    { name: "an array", value: [{ type: "bar" }] },
    { name: "a layout that is not an object", value: { data: [], layout: "wide" } }
  ],
  corrupt: [
    { name: "invalid JSON", body: enc.encode("{data: []}") },
    { name: "JSON without traces", body: enc.encode('{"layout": {}}') }
  ]
})

testCodec("plot/svg", svg, {
  accepted: [
    { name: "an SVG rendered by Vega (text)", value: vegaSvg },
    { name: "SVG bytes with an XML prolog", value: enc.encode('<?xml version="1.0"?>\n<!-- made by hand -->\n<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 20"><circle r="4"/></svg>') }
  ],
  rejected: [
    { name: "HTML", value: "<html><svg></svg></html>" },
    { name: "a PNG", value: pngOf(2, 2) },
    { name: "a number", value: 1 }
  ],
  corrupt: [
    { name: "text without an svg root", body: enc.encode("<html></html>") },
    { name: "invalid UTF-8", body: new Uint8Array([0x3c, 0x73, 0x76, 0x67, 0xff, 0x3e]) }
  ]
})

const good = pngOf(3, 2)
const badCrc = good.slice()
badCrc[17] ^= 0x01 // width changes, the IHDR CRC no longer matches

testCodec("plot/png", png, {
  accepted: [
    { name: "an RGBA PNG from pngjs", value: good },
    { name: "an RGB PNG from pngjs", value: pngOf(16, 9, 2) }
  ],
  rejected: [
    { name: "JPEG bytes", value: new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0, 16, 0x4a, 0x46, 0x49, 0x46]) },
    { name: "an SVG string", value: vegaSvg },
    { name: "an ArrayBuffer", value: good.buffer }
  ],
  corrupt: [
    { name: "a flipped bit in IHDR", body: badCrc },
    { name: "the signature alone", body: good.slice(0, 8) },
    { name: "bytes that are not a PNG", body: enc.encode("GIF89a......") }
  ]
})
