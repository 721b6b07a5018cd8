/**
 * The content types and applications of stack payloads, and which plugin package decodes
 * each: a pull of a payload whose codec is not installed names the package to install.
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

/** First-party plugin packages by the application they handle. */
export const pluginByApplication: Readonly<Record<string, string>> = {
  dataframe: "@dstack-ts/handler-dataframe",
  plot: "@dstack-ts/handler-plot",
  model: "@dstack-ts/handler-model"
}

/** First-party plugin packages by content type (media type, lower case, no parameters). */
export const pluginByContentType: Readonly<Record<string, string>> = {
  [ContentType.arrowStream]: "@dstack-ts/handler-dataframe",
  [ContentType.arrowFile]: "@dstack-ts/handler-dataframe",
  [ContentType.parquet]: "@dstack-ts/handler-dataframe",
  [ContentType.csv]: "@dstack-ts/handler-dataframe",
  [ContentType.vegaLite]: "@dstack-ts/handler-plot",
  [ContentType.plotly]: "@dstack-ts/handler-plot",
  [ContentType.svg]: "@dstack-ts/handler-plot",
  [ContentType.png]: "@dstack-ts/handler-plot",
  [ContentType.onnx]: "@dstack-ts/handler-model",
  [ContentType.safetensors]: "@dstack-ts/handler-model",
  [ContentType.modelFile]: "@dstack-ts/handler-model"
}

/**
 * The plugin package that decodes a payload, if a first-party one does: the content type
 * decides first (an image may belong to any application), then the application.
 */
export const pluginFor = (contentType: string, application: string): string | undefined =>
  pluginByContentType[contentType.split(";")[0].trim().toLowerCase()] ?? pluginByApplication[application]
