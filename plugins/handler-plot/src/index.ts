/**
 * @dstack-ts/handler-plot — stack codecs for plots: Vega-Lite specs, Plotly figures, SVG and
 * PNG images. Each decodes back to the JSON object or bytes that were pushed.
 */
import { type Codec, definePlugin } from "@dstack-ts/core"
import { viewers } from "./viewers.ts"
import { plotly } from "./PlotlyCodec.ts"
import { png } from "./PngCodec.ts"
import { svg } from "./SvgCodec.ts"
import { vegaLite } from "./VegaLiteCodec.ts"

export { isPlotlyFigure, plotly, type PlotlyFigure } from "./PlotlyCodec.ts"
export { isPng, png } from "./PngCodec.ts"
export { isSvg, svg, type SvgImage } from "./SvgCodec.ts"
export { isVegaLiteSpec, vegaLite, type VegaLiteSpec } from "./VegaLiteCodec.ts"

export { viewers } from "./viewers.ts"

export const PLUGIN_NAME = "@dstack-ts/handler-plot"
export const PLUGIN_VERSION = "0.1.0"

/**
 * The codecs this plugin contributes, in the order the AutoHandler tries them; each names this
 * package (`plugin`), which is recorded with what it writes so that a puller without it is told
 * what to install.
 */
export const codecs: ReadonlyArray<Codec.Any> = [png, svg, vegaLite, plotly]

/** The plugin descriptor: `plugins: [plot]` in a server or client build. */
export default definePlugin({
  name: PLUGIN_NAME,
  version: PLUGIN_VERSION,
  core: "^0.1.0",
  description: "Stack codecs for plots: Vega-Lite, Plotly, SVG and PNG.",
  codecs,
  viewers
})
