/**
 * The content types and applications of stack payloads that codecs write. Which package decodes
 * a payload is not known here: each payload records the package of the codec that wrote it
 * (`metadata.plugin`, see AutoHandler).
 */

/** Upstream application families of a pushed object. */
export const Application = {
  bytes: "bytes",
  json: "json",
  text: "text",
  dataframe: "dataframe",
  plot: "plot",
  model: "model"
} as const

/** Content types written by first-party codecs. */
export const ContentType = {
  bytes: "application/octet-stream",
  json: "application/json",
  text: "text/plain; charset=utf-8",
  arrowStream: "application/vnd.apache.arrow.stream",
  arrowFile: "application/vnd.apache.arrow.file",
  parquet: "application/vnd.apache.parquet",
  csv: "text/csv",
  vegaLite: "application/vnd.vegalite.v5+json",
  plotly: "application/vnd.plotly.v1+json",
  svg: "image/svg+xml",
  png: "image/png",
  onnx: "application/onnx",
  safetensors: "application/vnd.safetensors",
  modelFile: "application/vnd.dstack.model"
} as const
