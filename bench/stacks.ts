// Row 5: stacks. Push and pull of N MB of bytes through the SDK (Stacks.make over fetch) to
// a server with file blobs in a temp directory, MB/s, beside `cp` of a file of the same size
// in the same directory; and encode/decode of a 1M-row dataframe through handler-dataframe
// (the AutoHandler, as a push does) beside apache-arrow's own tableToIPC/tableFromIPC.
//   BENCH_STACKS_MB (default 100; full 1,000), BENCH_DF_ROWS (default 1,000,000)
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import { tableFromArrays, tableFromIPC, tableToIPC } from "apache-arrow"
import { AutoHandler } from "@dstack-ts/core"
import { Stacks } from "../core/src/client/index.ts"
import { codecs as dataframeCodecs } from "@dstack-ts/handler-dataframe"
import { startServer } from "./support/server.ts"
import { now, summarize, type Row } from "./support/stats.ts"
import type { BenchContext } from "./context.ts"

const REPS = 3

const time = async (f: () => Promise<unknown> | unknown): Promise<number> => {
  const t0 = now()
  await f()
  return now() - t0
}

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const mb = Number(process.env.BENCH_STACKS_MB ?? (ctx.full ? 1000 : 100))
  const size = mb * 1_000_000
  const rows: Array<Row> = []
  const server = await startServer({ databaseUrl: ctx.databaseUrl })
  try {
    const data = new Uint8Array(size)
    for (let i = 0; i < size; i += 4096) data[i] = (i / 4096) & 0xff
    // baseline: cp of a file of the same size in the same directory
    const src = path.join(server.dir, "cp-src.bin")
    fs.writeFileSync(src, data)
    const cpTimes: Array<number> = []
    for (let i = 0; i < REPS; i++) {
      const dst = path.join(server.dir, `cp-dst-${i}.bin`)
      cpTimes.push(await time(() => execFileSync("cp", [src, dst])))
      fs.rmSync(dst)
    }
    fs.rmSync(src)
    const cpMBps = mb / (summarize(cpTimes).p50 / 1000)

    const stacks = Stacks.make({ url: server.url, token: server.token, codecs: [] })
    const pushTimes: Array<number> = []
    const pullTimes: Array<number> = []
    ctx.log(`stacks: push/pull ${mb} MB × ${REPS}`)
    for (let i = 0; i < REPS; i++) {
      pushTimes.push(await time(() => stacks.push(`bench/blob-${i}`, data, { message: "bench" })))
      let got: unknown
      pullTimes.push(await time(async () => void (got = await stacks.pull(`bench/blob-${i}`))))
      if (!(got instanceof Uint8Array) || got.length !== size) throw new Error(`pull answered ${typeof got} of ${(got as Uint8Array)?.length} bytes, not ${size}`)
      got = undefined
    }
    const push = summarize(pushTimes)
    const pull = summarize(pullTimes)
    for (const [label, s] of [["push", push], ["pull", pull]] as const) {
      const rate = mb / (s.p50 / 1000)
      rows.push({ section: "5 stacks", measure: `SDK ${label} of ${mb} MB (bytes)`, unit: "MB/s", value: rate, baseline: cpMBps, better: "higher", target: "≥ 50% of cp (1 GB)", verdict: rate >= 0.5 * cpMBps ? "meets" : "short", note: `p50 of ${REPS}, worst ${(mb / (s.p99 / 1000)).toFixed(0)} MB/s; baseline cp in the same directory (page cache warm)` })
    }
  } finally {
    await server.stop()
  }

  // dataframe encode/decode, in this process
  const n = Number(process.env.BENCH_DF_ROWS ?? 1_000_000)
  ctx.log(`stacks: dataframe of ${n} rows`)
  const id = new Float64Array(n)
  const x = new Float64Array(n)
  const name: Array<string> = new Array(n)
  for (let i = 0; i < n; i++) {
    id[i] = i
    x[i] = Math.sin(i)
    name[i] = `row-${i % 1000}`
  }
  const table = tableFromArrays({ id, x, name })
  const auto = AutoHandler.make(dataframeCodecs)
  const enc: Array<number> = []
  const dec: Array<number> = []
  const bEnc: Array<number> = []
  const bDec: Array<number> = []
  let encodedSize = 0
  for (let i = 0; i < REPS; i++) {
    let encoded: any
    enc.push(await time(async () => void (encoded = await Effect.runPromise(auto.encode(table)))))
    encodedSize = encoded.body?.length ?? encoded.body?.byteLength ?? 0
    dec.push(await time(() => Effect.runPromise(auto.decode(encoded))))
    let ipc: Uint8Array | undefined
    bEnc.push(await time(() => void (ipc = tableToIPC(table, "stream"))))
    bDec.push(await time(() => tableFromIPC(ipc!)))
  }
  const records = Array.from({ length: n }, (_, i) => ({ id: i, x: x[i]!, name: name[i]! }))
  const recEnc: Array<number> = []
  for (let i = 0; i < REPS; i++) recEnc.push(await time(() => Effect.runPromise(auto.encode(records))))
  const e = summarize(enc)
  rows.push(
    { section: "5 stacks", measure: `dataframe encode, ${n.toLocaleString("en-US")} rows × 3 columns (Arrow Table)`, unit: "ms", value: e, baseline: summarize(bEnc), better: "lower", target: "< 1 s", verdict: e.p99 < 1000 ? "meets" : "short", note: `baseline apache-arrow tableToIPC; ${(encodedSize / 2 ** 20).toFixed(0)} MiB encoded` },
    { section: "5 stacks", measure: "dataframe decode, same", unit: "ms", value: summarize(dec), baseline: summarize(bDec), better: "lower", note: "baseline tableFromIPC" },
    { section: "5 stacks", measure: `dataframe encode from ${n.toLocaleString("en-US")} plain records`, unit: "ms", value: summarize(recEnc), baseline: summarize(bEnc), better: "lower", target: "< 1 s", verdict: summarize(recEnc).p99 < 1000 ? "meets" : "short", note: "baseline tableToIPC of the ready table" }
  )
  return rows
}
