// Dataframes through the SDK: push records, an Arrow table, a CSV file and Parquet to stacks and
// pull each back as an Arrow Table. Run it next to a running server (`dstack server`):
//   npx tsx examples/stacks/dataframe.ts        (or: deno run -A examples/stacks/dataframe.ts)
// The client comes from ~/.dstack/config.yml (or DSTACK_SERVER_URL / DSTACK_TOKEN / DSTACK_PROJECT).
import { readFile } from "node:fs/promises"
import { tableFromArrays, type Table } from "apache-arrow"
import { Client } from "@dstack-ts/client"
import { codecs, csv, parquet } from "@dstack-ts/handler-dataframe"

const file = (name: string) => readFile(new URL(`files/${name}`, import.meta.url))
const rows = (table: Table) => table.toArray().map((row) => row.toJSON())
const show = (title: string, table: Table) =>
  console.log(`${title}: ${table.numRows} rows, columns ${table.schema.fields.map((f) => `${f.name}:${f.type}`).join(", ")}`)

const client = await Client.fromConfig()
// The handler plugin's codecs encode dataframes; without them a pull of a dataframe fails with NotInstalled.
const stacks = client.stacks({ codecs })

// 1. An array of plain records: stored as an Arrow IPC stream, pulled back as an Arrow Table.
const weather = [
  { city: "Oslo", temp: 3.5, sunny: false },
  { city: "Lisbon", temp: 17.25, sunny: true },
  { city: "Nairobi", temp: 24, sunny: true }
]
const pushed = await stacks.push("examples/weather", weather, { message: "three cities", description: "today's weather" })
console.log(`pushed examples/weather frame ${pushed.frameId}: ${pushed.url}`)
const weatherBack = (await stacks.pull("examples/weather")) as Table
show("pulled examples/weather", weatherBack)

// 2. An Arrow table, as you get it from apache-arrow, DuckDB or Polars' to_arrow().
const scores = tableFromArrays({ id: Int32Array.from([1, 2, 3]), score: Float64Array.from([0.5, 0.75, 0.9]) })
await stacks.push("examples/scores", scores, { message: "arrow" })
const scoresBack = (await stacks.pull("examples/scores")) as Table
show("pulled examples/scores", scoresBack)

// 3. A CSV file, stored verbatim as text/csv; a pull types its columns (numbers, booleans, text).
const salesPush = await stacks.push("examples/sales", csv(await file("sales.csv")), { message: "sales.csv" })
console.log(`pushed examples/sales frame ${salesPush.frameId}`)
const salesBack = (await stacks.pull("examples/sales")) as Table
show("pulled examples/sales", salesBack)

// 4. Parquet: the `encoder` option picks the codec instead of the AutoHandler's choice. This
// frame is the weather stack's second revision, with the table twice, told apart by a param
// that a pull (and the viewer's widget) chooses by; the first revision stays readable by id.
const frame = stacks.frame("examples/weather")
await frame.add(weather, { description: "as Arrow", params: { format: "arrow" } })
await frame.add(weather, { encoder: parquet, description: "as Parquet", params: { format: "parquet" } })
const second = await frame.push("arrow and parquet")
console.log(`pushed examples/weather frame ${second.frameId}`)
const parquetBack = (await stacks.pull("examples/weather", { params: { format: "parquet" } })) as Table
show("pulled examples/weather (format=parquet)", parquetBack)
const firstBack = (await stacks.pull("examples/weather", { frameId: pushed.frameId })) as Table
show("pulled examples/weather's first frame", firstBack)

// Each pull gives back what was pushed.
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)
const checks: Array<[string, boolean]> = [
  ["records", same(rows(weatherBack), weather)],
  ["arrow", same(rows(scoresBack), rows(scores))],
  ["csv", salesBack.numRows === 6 && same(rows(salesBack)[0], { region: "eu", quarter: "Q1", revenue: 120.5, target_met: true })],
  ["parquet", same(rows(parquetBack), weather)],
  ["history", same(rows(firstBack), weather)]
]
for (const [name, ok] of checks) console.log(`${ok ? "ok" : "MISMATCH"} ${name}`)
process.exit(checks.every(([, ok]) => ok) ? 0 : 1)
