// Row 5: stacks. Push and pull of N MB of bytes through the SDK (Stacks.make over fetch) to
// a server with file blobs in a temp directory, MB/s, beside two baselines: `cp` of a file of
// the same size in the same directory (the target's), and a bare node:http server storing a
// PUT body in a file and answering a GET from it (bench/support/bare-blob-main.ts), driven by
// the same fetch — what HTTP over loopback plus the disk allow here — with `curl -T`/`curl -o`
// against that bare server in the note. Reps of the SDK and the bare server alternate so that
// the load of the (shared) machine weighs on both alike, each removing its copy before the
// other writes. And encode/decode of a 1M-row
// dataframe through handler-dataframe (the AutoHandler, as a push does) beside apache-arrow's
// own tableToIPC/tableFromIPC.
//   BENCH_STACKS_MB (default 100; full 1,000), BENCH_DF_ROWS (default 1,000,000)
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { tableFromArrays, tableFromIPC, tableToIPC } from "apache-arrow"
import { AutoHandler } from "@dstack-ts/core"
import { Stacks } from "@dstack-ts/client"
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

/** The bare node:http blob server in its own process, on a loopback port. */
const startBareBlob = async (dir: string) => {
  const file = path.join(path.dirname(fileURLToPath(import.meta.url)), "support", "bare-blob-main.ts")
  const proc = spawn(process.execPath, ["--import", "tsx", file], { env: { ...process.env, BENCH_BARE_BLOB_DIR: dir }, stdio: ["ignore", "pipe", "inherit"] })
  const port = await new Promise<number>((resolve, reject) => {
    proc.once("exit", (code) => reject(new Error(`bare blob server exited with ${code}`)))
    proc.stdout!.once("data", (d: Buffer) => resolve((JSON.parse(String(d).split("\n")[0]!) as { port: number }).port))
  })
  proc.removeAllListeners("exit")
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () => new Promise<void>((resolve) => {
      if (proc.exitCode !== null) return resolve()
      proc.once("exit", () => resolve())
      proc.kill("SIGTERM")
    })
  }
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
    const cpMBps = mb / (summarize(cpTimes).p50 / 1000)

    const bare = await startBareBlob(path.join(server.dir, "bare"))
    const stacks = Stacks.make({ url: server.url, token: server.token, codecs: [] })
    const pushTimes: Array<number> = []
    const pullTimes: Array<number> = []
    const barePut: Array<number> = []
    const bareGet: Array<number> = []
    const curlPut: Array<number> = []
    const curlGet: Array<number> = []
    ctx.log(`stacks: push/pull ${mb} MB × ${REPS}, bare node:http and curl alternating`)
    try {
      // Each side writes, reads back and removes its copy before the next starts, so that
      // neither pays for the other's dirty pages being written back.
      for (let i = 0; i < REPS; i++) {
        barePut.push(await time(async () => {
          const res = await fetch(`${bare.url}/put-${i}`, { method: "PUT", body: data })
          if (((await res.json()) as { size: number }).size !== size) throw new Error("bare PUT stored the wrong size")
        }))
        bareGet.push(await time(async () => {
          const got = new Uint8Array(await (await fetch(`${bare.url}/put-${i}`)).arrayBuffer())
          if (got.length !== size) throw new Error(`bare GET answered ${got.length} bytes`)
        }))
        fs.rmSync(path.join(server.dir, "bare", `put-${i}`), { force: true })
        pushTimes.push(await time(() => stacks.push(`bench/blob-${i}`, data, { message: "bench" })))
        let got: unknown
        pullTimes.push(await time(async () => void (got = await stacks.pull(`bench/blob-${i}`))))
        if (!(got instanceof Uint8Array) || got.length !== size) throw new Error(`pull answered ${typeof got} of ${(got as Uint8Array)?.length} bytes, not ${size}`)
        got = undefined
        await stacks.delete(`bench/blob-${i}`)
        curlPut.push(await time(() => execFileSync("curl", ["-sS", "-o", "/dev/null", "-T", src, `${bare.url}/curl-${i}`])))
        curlGet.push(await time(() => execFileSync("curl", ["-sS", "-o", path.join(server.dir, "curl-out.bin"), `${bare.url}/curl-${i}`])))
        for (const f of [`bare/curl-${i}`, "curl-out.bin"]) fs.rmSync(path.join(server.dir, f), { force: true })
      }
    } finally {
      await bare.stop()
      fs.rmSync(src, { force: true })
    }
    const rate = (ms: number) => mb / (ms / 1000)
    const fmt = (ms: number) => rate(ms).toFixed(0)
    const sides = [
      ["push", summarize(pushTimes), summarize(barePut), summarize(curlPut), "PUT → createWriteStream", "curl -T"],
      ["pull", summarize(pullTimes), summarize(bareGet), summarize(curlGet), "createReadStream → GET, arrayBuffer()", "curl -o"]
    ] as const
    for (const [label, s, b, c, how, curl] of sides) {
      const value = rate(s.p50)
      rows.push({ section: "5 stacks", measure: `SDK ${label} of ${mb} MB (bytes) vs cp`, unit: "MB/s", value, baseline: cpMBps, better: "higher", target: "≥ 50% of cp (1 GB)", verdict: value >= 0.5 * cpMBps ? "meets" : "short", note: `p50 of ${REPS}, worst ${fmt(s.p99)} MB/s; baseline cp in the same directory (page cache warm, in-kernel copy)` })
      rows.push({ section: "5 stacks", measure: `SDK ${label} of ${mb} MB (bytes) vs bare node:http`, unit: "MB/s", value, baseline: rate(b.p50), better: "higher", note: `baseline: fetch to a bare node:http server (${how}), p50 of ${REPS}, worst ${fmt(b.p99)} MB/s; ${curl} to it: ${fmt(c.p50)} MB/s` })
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
