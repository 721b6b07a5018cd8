// Plot codecs against other tools (vega-lite, vega, pngjs), their metadata, and the
// AutoHandler's choices with the plugin installed. Vega annotates data values in place when it
// compiles or renders, hence the structuredClone calls.
import { AutoHandler, Codec } from "@dstack-ts/core"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import { PNG } from "pngjs"
import { compile } from "vega-lite"
import plugin, { codecs, PLUGIN_NAME, plotly, png, svg, vegaLite, viewers } from "../src/index.ts"
import { crc32Source, crc32Table } from "../src/PngCodec.ts"
import { barChart, compileAll, faceted, layered, plotlyFigure, pngOf, vegaSvg } from "./fixtures.ts"

const auto = AutoHandler.make(codecs)

describe("Vega-Lite", () => {
  it("the example specs are valid Vega-Lite (vega-lite compiles them)", () => {
    const compiled = compileAll()
    expect(compiled).toHaveLength(3)
    for (const spec of compiled) expect((spec as { marks?: unknown }).marks).toBeDefined()
  })

  it.effect("metadata carries kind, version, mark, title and size; the content type the major version", () =>
    Effect.gen(function*() {
      const bar = yield* vegaLite.encode(barChart)
      expect(bar.contentType).toBe("application/vnd.vegalite.v5+json")
      expect(bar.metadata).toEqual({ kind: "vega-lite", version: 5, mark: "bar" })
      const layer = yield* vegaLite.encode(layered)
      expect(layer.metadata).toEqual({ kind: "vega-lite", composition: "layer", title: "Stock prices", width: 400, height: 300 })
      const facet = yield* vegaLite.encode(faceted)
      expect(facet.contentType).toBe("application/vnd.vegalite.v6+json")
      expect(facet.metadata.composition).toBe("facet")
    }))

  it.effect("a decoded spec still compiles", () =>
    Effect.gen(function*() {
      const encoded = yield* auto.encode(barChart)
      expect(encoded.codec).toBe("plot/vega-lite")
      const back = yield* auto.decode(encoded)
      expect(() => compile(structuredClone(back) as never)).not.toThrow()
    }))
})

describe("Plotly", () => {
  it.effect("metadata counts traces and reads title and size from the layout", () =>
    Effect.gen(function*() {
      const encoded = yield* auto.encode(plotlyFigure)
      expect(encoded.codec).toBe("plot/plotly")
      expect(encoded.metadata).toEqual({
        kind: "plotly",
        traces: 2,
        trace_types: ["bar", "scatter"],
        title: "Quarterly sales",
        width: 640,
        height: 480,
        plugin: "@dstack-ts/handler-plot"
      })
      expect(yield* auto.decode(encoded)).toEqual(plotlyFigure)
    }))
})

describe("images", () => {
  it.effect("PNG from pngjs: size from IHDR, and pngjs reads the decoded bytes to the same pixels", () =>
    Effect.gen(function*() {
      const bytes = pngOf(13, 7)
      const encoded = yield* auto.encode(bytes)
      expect(encoded.codec).toBe("plot/png")
      expect(encoded.metadata).toEqual({ kind: "png", width: 13, height: 7, bit_depth: 8, color_type: "rgba", size: bytes.length, plugin: "@dstack-ts/handler-plot" })
      const back = (yield* auto.decode(encoded)) as Uint8Array
      const pixels = PNG.sync.read(Buffer.from(back))
      expect(pixels.width).toBe(13)
      expect(pixels.data[(6 * 13 + 12) * 4]).toBe(12 * 7)
    }))

  it.effect("SVG rendered by Vega: size from the root element, text decodes to text", () =>
    Effect.gen(function*() {
      const encoded = yield* auto.encode(vegaSvg)
      expect(encoded.codec).toBe("plot/svg")
      expect(encoded.metadata.width).toBe(Number(/width="(\d+)"/.exec(vegaSvg)![1]))
      expect(encoded.metadata.height).toBe(Number(/height="(\d+)"/.exec(vegaSvg)![1]))
      expect(yield* auto.decode(encoded)).toBe(vegaSvg)
    }))

  it.effect("SVG without width/height takes its size from viewBox", () =>
    Effect.gen(function*() {
      const encoded = yield* svg.encode('<svg viewBox="0 0 320 200"><rect/></svg>')
      expect(encoded.metadata).toMatchObject({ kind: "svg", width: 320, height: 200 })
    }))

  it.effect("a PNG with a corrupt header is refused on push too, with the cause", () =>
    Effect.gen(function*() {
      const bytes = pngOf(2, 2)
      bytes[20] ^= 0xff
      const err = yield* Effect.flip(png.encode(bytes))
      expect(err.reason).toBe("Invalid")
      expect(err.message).toContain("IHDR checksum")
    }))
})

describe("AutoHandler with the plot codecs", () => {
  it.effect("plain strings, JSON and other bytes still go to core's codecs", () =>
    Effect.gen(function*() {
      expect((yield* auto.encode("<p>not svg</p>")).codec).toBe("text/plain")
      expect((yield* auto.encode({ a: 1 })).codec).toBe("json/value")
      expect((yield* auto.encode(new Uint8Array([1, 2, 3]))).codec).toBe("bytes/octet-stream")
    }))

  it.effect("without the plugin, a plot payload names the package to install", () =>
    Effect.gen(function*() {
      for (const value of [plotlyFigure, barChart, vegaSvg, pngOf(1, 1)]) {
        const encoded = yield* auto.encode(value)
        const err = yield* Effect.flip(AutoHandler.make([]).decode(encoded))
        expect(err.reason).toBe("NotInstalled")
        expect(err.message).toContain(PLUGIN_NAME)
      }
    }))

  it("the plugin descriptor matches the package and lists the codecs", () => {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"))
    expect(plugin.name).toBe(pkg.name)
    expect(plugin.version).toBe(pkg.version)
    expect(plugin.codecs?.map((c: Codec.Any) => c.id)).toEqual(["plot/png", "plot/svg", "plot/vega-lite", "plot/plotly"])
    expect(plotly.application).toBe("plot")
  })
})

describe("PNG checksums", () => {
  it("use zlib.crc32 on Node and Deno, and the table (the browser's path) gives the same values", () => {
    expect(crc32Source).toBe("zlib")
    const zlib = (process as unknown as { getBuiltinModule: (id: string) => { crc32: (b: Uint8Array) => number } }).getBuiltinModule("node:zlib")
    const png = pngOf(3, 2)
    for (const data of [new Uint8Array(0), new TextEncoder().encode("IHDR"), png, png.subarray(12, 29)]) {
      expect(crc32Table(data)).toBe(zlib.crc32(data))
    }
  })
})

describe("the plot viewers", () => {
  it("claim Vega-Lite, Plotly and image content types and serve their libraries from this plugin's dependencies", async () => {
    expect(Object.keys(plugin.viewers ?? {})).toEqual(["vega-lite", "plotly", "image"])
    expect(viewers["vega-lite"].contentTypes).toEqual(["application/vnd.vegalite.*"])
    for (const [name, viewer] of Object.entries(viewers)) expect(viewer.script).toContain(`dstackViewer.register("${name}"`)
    const vega = await viewers["vega-lite"].assets!["vega.min.js"].load()
    expect(new TextDecoder().decode(vega.subarray(0, 4000))).toMatch(/vega/i)
    const plotlyJs = await viewers.plotly.assets!["plotly.min.js"].load()
    expect(plotlyJs.length).toBeGreaterThan(1_000_000)
  })
})
