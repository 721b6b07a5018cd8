/**
 * @dstack-ts/handler-dataframe — stack codecs for dataframes: Apache Arrow tables and arrays of
 * records (Arrow IPC), Parquet files and CSV. Every one decodes to an Arrow `Table`.
 */
import { type Codec, definePlugin } from "@dstack-ts/core"
import { viewers } from "./viewers.ts"
import { arrow } from "./ArrowCodec.ts"
import { csvCodec } from "./CsvCodec.ts"
import { parquet } from "./ParquetCodec.ts"

export { arrow, type ArrowInput, isArrowFile, isArrowStream } from "./ArrowCodec.ts"
export { Csv, csv, csvCodec, type CsvOptions } from "./CsvCodec.ts"
export { isParquetFile, parquet, type ParquetInput, writeParquet } from "./ParquetCodec.ts"
export { tableFromRecords } from "./internal/columns.ts"

export { viewers } from "./viewers.ts"

export const PLUGIN_NAME = "@dstack-ts/handler-dataframe"
export const PLUGIN_VERSION = "0.1.0"

/**
 * The codecs this plugin contributes, in the order the AutoHandler tries them; each names this
 * package (`plugin`), which is recorded with what it writes so that a puller without it is told
 * what to install.
 */
export const codecs: ReadonlyArray<Codec.Any> = [arrow, parquet, csvCodec]

/** The plugin descriptor: `plugins: [dataframe]` in a server or client build. */
export default definePlugin({
  name: PLUGIN_NAME,
  version: PLUGIN_VERSION,
  core: "^0.1.0",
  description: "Stack codecs for dataframes: Arrow tables, records, Parquet and CSV, decoded to Arrow tables.",
  codecs,
  viewers
})
