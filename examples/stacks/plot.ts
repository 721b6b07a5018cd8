// Plots through the SDK: push a Vega-Lite spec, a Plotly figure, an SVG and a PNG to stacks and
// pull each back as it was pushed. Run it next to a running server (`dstack server`):
//   npx tsx examples/stacks/plot.ts             (or: deno run -A examples/stacks/plot.ts)
// Open the printed address in a browser to see the plots drawn by the stack viewer.
import { readFile } from "node:fs/promises"
import { Client } from "@dstack-ts/client"
import { codecs } from "@dstack-ts/handler-plot"

const file = (name: string) => readFile(new URL(`files/${name}`, import.meta.url))
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)
const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i])

const client = await Client.fromConfig()
const stacks = client.stacks({ codecs })

// 1. A Vega-Lite spec (a plain object): stored as application/vnd.vegalite.v5+json.
const vegaLite = JSON.parse(await file("chart.vl.json").then(String))
const pushed = await stacks.push("examples/revenue", vegaLite, { message: "vega-lite", description: "revenue by region" })
console.log(`pushed examples/revenue frame ${pushed.frameId}: ${pushed.url}`)
const vegaLiteBack = await stacks.pull("examples/revenue")

// 2. A Plotly figure ({ data, layout }, as plotly.py's fig.to_json() writes it).
const plotly = {
  data: [{ type: "scatter", mode: "lines+markers", name: "loss", x: [1, 2, 3, 4], y: [0.9, 0.55, 0.41, 0.38] }],
  layout: { title: { text: "Training loss" }, xaxis: { title: { text: "epoch" } } }
}
await stacks.push("examples/loss", plotly, { message: "plotly" })
const plotlyBack = await stacks.pull("examples/loss")

// 3. An SVG and a PNG (bytes, e.g. from matplotlib's savefig): one frame, a param per format.
const svg = await file("chart.svg")
const png = new Uint8Array(await file("chart.png"))
const frame = stacks.frame("examples/revenue-images")
await frame.add(svg.toString("utf8"), { params: { format: "svg" } })
await frame.add(png, { params: { format: "png" } })
await frame.push("svg and png")
const svgBack = await stacks.pull("examples/revenue-images", { params: { format: "svg" } })
const pngBack = (await stacks.pull("examples/revenue-images", { params: { format: "png" } })) as Uint8Array

// What the server stored, as `dstack stacks` and the viewer see it.
const info = await stacks.get("examples/revenue-images")
for (const a of info.head_frame?.attachments ?? []) console.log(`examples/revenue-images ${JSON.stringify(a.params)}: ${a.content_type}, ${a.size} bytes`)

const checks: Array<[string, boolean]> = [
  ["vega-lite", same(vegaLiteBack, vegaLite)],
  ["plotly", same(plotlyBack, plotly)],
  ["svg", svgBack === svg.toString("utf8")],
  ["png", sameBytes(new Uint8Array(pngBack), png)]
]
for (const [name, ok] of checks) console.log(`${ok ? "ok" : "MISMATCH"} ${name}`)
process.exit(checks.every(([, ok]) => ok) ? 0 : 1)
