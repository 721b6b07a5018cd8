/**
 * The stack viewer's parts for plots: Vega-Lite specs compiled by vega-lite and drawn by vega,
 * Plotly figures drawn by plotly.js (both libraries served by the server from this plugin's
 * dependencies, no CDN), and PNG and SVG images shown as they are.
 */
import { type StackViewer, StackViewers } from "@dstack-ts/core"

const JS = "text/javascript; charset=utf-8"

export const vegaLiteViewer: StackViewer = {
  contentTypes: ["application/vnd.vegalite.*"],
  assets: {
    "vega.min.js": StackViewers.packageAsset(import.meta.url, "vega", "build/vega.min.js", JS),
    "vega-lite.min.js": StackViewers.packageAsset(import.meta.url, "vega-lite", "build/vega-lite.min.js", JS)
  },
  script: String.raw`dstackViewer.register("vega-lite", function (ctx) {
  // vega-lite's bundle needs vega loaded first.
  return Promise.all([ctx.json(), ctx.loadScript(ctx.asset("vega.min.js"))])
    .then(function (res) { return ctx.loadScript(ctx.asset("vega-lite.min.js")).then(function () { return res[0]; }); })
    .then(function (spec) {
      var box = ctx.el("div", { class: "plot vega-lite" });
      ctx.container.appendChild(box);
      var compiled = window.vegaLite.compile(spec).spec;
      return new window.vega.View(window.vega.parse(compiled), { renderer: "svg", container: box, hover: true }).runAsync();
    });
});
`
}

export const plotlyViewer: StackViewer = {
  contentTypes: ["application/vnd.plotly.v1+json"],
  assets: { "plotly.min.js": StackViewers.packageAsset(import.meta.url, "plotly.js-dist-min", "plotly.min.js", JS) },
  script: String.raw`dstackViewer.register("plotly", function (ctx) {
  return Promise.all([ctx.json(), ctx.loadScript(ctx.asset("plotly.min.js"))]).then(function (res) {
    var fig = res[0];
    var box = ctx.el("div", { class: "plot plotly" });
    ctx.container.appendChild(box);
    return window.Plotly.newPlot(box, fig.data || [], fig.layout || {}, fig.config || {});
  });
});
`
}

export const imageViewer: StackViewer = {
  contentTypes: ["image/png", "image/svg+xml"],
  script: String.raw`dstackViewer.register("image", function (ctx) {
  ctx.container.appendChild(ctx.el("img", { class: "plot", src: ctx.download, alt: ctx.attachment.description || "plot" }));
  return Promise.resolve();
});
`
}

/** The plot viewers by name, as contributed by the plugin. */
export const viewers: Readonly<Record<string, StackViewer>> = {
  "vega-lite": vegaLiteViewer,
  plotly: plotlyViewer,
  image: imageViewer
}
