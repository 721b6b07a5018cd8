// Row 4: logs from a job to a following client. The job (process executor, local backend)
// writes N MB of numbered 100-byte lines; the client follows `logs/stream` (raw fetch) as the
// SDK does (binary frames, `Accept: application/x-dstack-ts-logs`), then a second job the same
// way as a browser or another client does (Server-Sent Events of JSON), counts every line by
// its number (lost and repeated), and measures MB/s. Meanwhile the server's RSS is sampled
// from /proc and `runs/get` is called in a loop (c=1) for its p99.
// Baseline: the same command piped to cat (`bash -c 'cmd | cat > /dev/null'`).
//   BENCH_LOGS_MB (default 100; full 1,000); BENCH_LOGS_FORMATS (default "binary,sse");
//   BENCH_LOGS_PROBE=0: no runs/get meanwhile (the server's CPU is then the log path's alone)
// The RSS row's note splits the peak with the server's process.memoryUsage() (V8 heap,
// external: PGlite's WASM memory is ~140 MiB of it, array buffers: output in flight or awaiting
// GC); the runs/get row's note has the server's event-loop delay and GC pauses meanwhile
// (bench/support/server-main.ts's /bench/memory and /bench/loop).
// The server runs under the tsx loader, as users run it (`dstack server`: cli/bin/dstack.mjs
// registers tsx; `npm run demo` is tsx too). Measured once bundled with esbuild instead (no
// loader in the process): ~270 MiB idle against ~335 MiB under tsx, PGlite included.
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import { LOG_FRAMES_TYPE, LogFrameDecoder } from "../core/src/api/logFrames.ts"
import { apply, FINISHED, waitRun } from "./support/api.ts"
import { post } from "./support/load.ts"
import { benchJson, memNote, type ServerMemory, startServer } from "./support/server.ts"
import { now, sleep, summarize, type Row } from "./support/stats.ts"
import type { BenchContext } from "./context.ts"

const LINE = 100

/** CPU seconds (user + system) a process has used so far, from /proc; 0 where there is none. */
const cpuSeconds = (pid: number): number => {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return 0
  }
}

/** CPU seconds of the server's runner processes (its node children; the job itself not counted). */
const runnersCpu = (serverPid: number): number => {
  let total = 0
  try {
    for (const task of fs.readdirSync(`/proc/${serverPid}/task`)) {
      for (const child of fs.readFileSync(`/proc/${serverPid}/task/${task}/children`, "utf8").trim().split(/\s+/).filter(Boolean)) {
        if (fs.readFileSync(`/proc/${child}/comm`, "utf8").trim().startsWith("node")) total += cpuSeconds(Number(child))
      }
    }
  } catch {
    // not Linux, or the runner is gone
  }
  return total
}

/** awk writes lines `%09d` + 90 spaces + newline: exactly 100 bytes each, numbered from 1. */
const command = (lines: number) => `awk 'BEGIN{p=sprintf("%90s",""); for(i=1;i<=${lines};i++) printf "%09d%s\\n", i, p}'`

type Format = "binary" | "sse"


/** Counts numbered lines, whatever pieces they arrive in. */
const lineCounter = (lines: number) => {
  const seen = new Uint8Array(lines + 1)
  let repeated = 0
  let bad = 0
  let bytes = 0
  let partial = ""
  return {
    /** Output as text (SSE messages). */
    text: (message: string) => {
      bytes += Buffer.byteLength(message)
      const text = partial + message
      const parts = text.split("\n")
      partial = parts.pop()!
      for (const line of parts) {
        const i = Number(line.slice(0, 9))
        if (!Number.isInteger(i) || i < 1 || i > lines || line.length !== LINE - 1) bad++
        else if (seen[i]) repeated++
        else seen[i] = 1
      }
    },
    /** Output as bytes (binary frames): lines found by byte, numbers read from their digits. */
    bytes: (payload: Uint8Array) => {
      bytes += payload.byteLength
      let start = 0
      let data = payload
      if (partial !== "") {
        // A line cut between two frames: joined with what came before.
        const joined = Buffer.concat([Buffer.from(partial, "latin1"), payload])
        partial = ""
        data = joined
      }
      for (;;) {
        const nl = data.indexOf(10, start)
        if (nl < 0) break
        let i = 0
        let ok = nl - start === LINE - 1
        for (let k = start; ok && k < start + 9; k++) {
          const d = data[k] - 48
          if (d < 0 || d > 9) ok = false
          else i = i * 10 + d
        }
        if (!ok || i < 1 || i > lines) bad++
        else if (seen[i]) repeated++
        else seen[i] = 1
        start = nl + 1
      }
      if (start < data.byteLength) partial = Buffer.from(data.buffer, data.byteOffset + start, data.byteLength - start).toString("latin1")
    },
    result: () => {
      let received = 0
      for (let i = 1; i <= lines; i++) received += seen[i]!
      return { lost: lines - received, repeated, bad, bytes }
    }
  }
}

/** Follows the run's log to its end in `format`; calls `first` at the first output. */
const follow = async (server: Awaited<ReturnType<typeof startServer>>, runName: string, format: Format, count: ReturnType<typeof lineCounter>, first: () => void): Promise<string> => {
  const res = await fetch(`${server.url}/api/project/main/logs/stream?run_name=${encodeURIComponent(runName)}`, {
    headers: { authorization: `Bearer ${server.token}`, accept: format === "binary" ? LOG_FRAMES_TYPE : "text/event-stream" }
  })
  if (res.status !== 200 || res.body === null) throw new Error(`logs/stream ${runName}: HTTP ${res.status} ${await res.text()}`)
  const reader = res.body.getReader()
  let ended = ""
  if (format === "binary") {
    if (!(res.headers.get("content-type") ?? "").startsWith(LOG_FRAMES_TYPE)) throw new Error(`logs/stream answered ${res.headers.get("content-type")}, not binary frames`)
    const frames = new LogFrameDecoder()
    const text = new TextDecoder()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      for (const frame of frames.push(value)) {
        if (frame.kind === "end" || frame.kind === "error") ended = `${frame.kind} ${text.decode(frame.payload)}`
        else {
          first()
          count.bytes(frame.payload)
        }
      }
    }
    return ended
  }
  const decoder = new TextDecoder()
  let buffer = ""
  // Where the search for the next blank line resumes: a megabyte event comes in many reads.
  let searched = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    buffer += decoder.decode(value, { stream: true })
    let end: number
    while ((end = buffer.indexOf("\n\n", searched)) >= 0) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      searched = 0
      const ev = /^event: (.*)$/m.exec(block)?.[1]
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n")
      if (ev === "logs") {
        first()
        for (const e of JSON.parse(data) as Array<{ message: string }>) count.text(e.message)
      } else if (ev === "end" || ev === "error") ended = `${ev} ${data}`
    }
    searched = Math.max(0, buffer.length - 1)
  }
  return ended
}

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const mb = Number(process.env.BENCH_LOGS_MB ?? (ctx.full ? 1000 : 100))
  const formats = (process.env.BENCH_LOGS_FORMATS ?? "binary,sse").split(",").map((f) => f.trim()).filter((f): f is Format => f === "binary" || f === "sse")
  const lines = Math.floor((mb * 1e6) / LINE)
  const cmd = command(lines)

  // baseline first: the command into cat
  const b0 = now()
  await new Promise<void>((resolve, reject) => execFile("bash", ["-c", `${cmd} | cat > /dev/null`], (e) => (e ? reject(e) : resolve())))
  const baseMBps = (lines * LINE) / 1e6 / ((now() - b0) / 1000)

  const server = await startServer({ maxInstances: 1, databaseUrl: ctx.databaseUrl })
  const rows: Array<Row> = []
  try {
    for (const format of formats) {
      const runName = `logs-flow-${format}`
      const label = format === "binary" ? "binary frames, as the SDK follows" : "Server-Sent Events of JSON"
      const rssStart = server.rssMiB()
      let rssPeak = rssStart
      const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, server.rssMiB())), 100)
      // What the RSS is made of (process.memoryUsage() in the server) at its highest sample.
      const memStart = await benchJson<ServerMemory>(server, "/bench/memory")
      let memPeak = memStart
      const memSampler = setInterval(() => {
        void benchJson<ServerMemory>(server, "/bench/memory").then((m) => {
          if (m !== undefined && (memPeak === undefined || m.rss > memPeak.rss)) memPeak = m
        })
      }, 250)
      await benchJson(server, "/bench/loop")
      // runs/get at c=1 while the log flows
      const getLatencies: Array<number> = []
      // BENCH_LOGS_PROBE=0 leaves runs/get out, for the CPU of the log path alone.
      let flowing = process.env.BENCH_LOGS_PROBE !== "0"
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      const prober = (async () => {
        while (flowing) {
          const t = now()
          await post(agent, { url: server.url, path: "/api/project/main/runs/get", body: JSON.stringify({ run_name: runName }), token: server.token }).catch(() => undefined)
          getLatencies.push(now() - t)
          await sleep(10)
        }
      })()

      ctx.log(`logs: ${mb} MB (${lines.toLocaleString("en-US")} lines) to a following client (${label})`)
      const cpu0 = { server: cpuSeconds(server.pid), client: process.cpuUsage() }
      // The runner outlives a run (the instance is reused): only what it used during this one counts.
      const runner0 = runnersCpu(server.pid)
      let runnerCpu = 0
      const runnerSampler = setInterval(() => (runnerCpu = Math.max(runnerCpu, runnersCpu(server.pid) - runner0)), 50)
      const count = lineCounter(lines)
      let firstAt = Number.NaN
      const t0 = now()
      await apply(server, runName, [cmd])
      const ended = await follow(server, runName, format, count, () => {
        if (Number.isNaN(firstAt)) firstAt = now()
      })
      const lastAt = now()
      clearInterval(runnerSampler)
      const clientCpu = process.cpuUsage(cpu0.client)
      const cpu = { server: cpuSeconds(server.pid) - cpu0.server, runner: runnerCpu, client: (clientCpu.user + clientCpu.system) / 1e6 }
      flowing = false
      await prober
      agent.destroy()
      clearInterval(sampler)
      clearInterval(memSampler)
      const loop = await benchJson<{ p50: number; p99: number; max: number; gc: { n: number; totalMs: number; maxMs: number } }>(server, "/bench/loop")
      const finished = await waitRun(server, runName, (r) => FINISHED.includes(r.status), { timeoutMs: 60_000 })
      const { lost, repeated, bad, bytes } = count.result()
      const streamMBps = bytes / 1e6 / ((lastAt - firstAt) / 1000)
      const totalMBps = bytes / 1e6 / ((lastAt - t0) / 1000)
      const get = summarize(getLatencies)
      const cpuNote = `CPU s per 100 MB: server ${(cpu.server * 100 / mb).toFixed(2)}, runner ${(cpu.runner * 100 / mb).toFixed(2)}, client ${(cpu.client * 100 / mb).toFixed(2)}`
      ctx.log(`logs (${format}): ${cpuNote}`)
      ctx.log(`logs (${format}): ${streamMBps.toFixed(1)} MB/s (submit→end ${totalMBps.toFixed(1)} MB/s), lost ${lost}, repeated ${repeated}, malformed ${bad}, rss ${rssStart.toFixed(0)}→${rssPeak.toFixed(0)} MiB (${memNote(memPeak)}), runs/get p99 ${get.p99.toFixed(0)} ms, loop delay p99 ${loop?.p99.toFixed(0)} max ${loop?.max.toFixed(0)} ms, GC ${loop?.gc.n}× ${loop?.gc.totalMs.toFixed(0)} ms (longest ${loop?.gc.maxMs.toFixed(0)}); run ${finished.run.status}; ${ended.slice(0, 120)}`)
      const main = format === formats[0]
      rows.push(
        { section: "4 logs", measure: `${mb} MB job → following client (${label}), first to last byte`, unit: "MB/s", value: streamMBps, baseline: baseMBps, better: "higher", ...(main ? { target: "≥ 100 MB/s", verdict: streamMBps >= 100 ? "meets" : "short" } : {}), note: `submit → last byte ${totalMBps.toFixed(1)} MB/s; baseline \`cmd \\| cat\`; run ${finished.run.status}; ${cpuNote}` },
        { section: "4 logs", measure: `lines lost / repeated (${format})`, unit: "lines", value: lost, better: "lower", target: "0 lost", verdict: lost === 0 && repeated === 0 && bad === 0 ? "meets" : "short", note: `${repeated} repeated, ${bad} malformed, of ${lines.toLocaleString("en-US")}` },
        { section: "4 logs", measure: `server RSS peak while it flows (${format})`, unit: "MiB", value: rssPeak, better: "lower", ...(main ? { target: "< 200 MB", verdict: rssPeak * 1.048576 < 200 ? "meets" : "short" } : {}), note: `${rssStart.toFixed(0)} MiB before the run; at the peak ${memNote(memPeak)}; before ${memNote(memStart)}` },
        { section: "4 logs", measure: `runs/get latency while it flows (c=1, ${format})`, unit: "ms", value: get, better: "lower", ...(main ? { target: "p99 < 50 ms", verdict: get.p99 < 50 ? "meets" : "short" } : {}), note: `n=${get.n}; the server's event-loop delay meanwhile p50 ${loop?.p50.toFixed(1)}, p99 ${loop?.p99.toFixed(0)}, max ${loop?.max.toFixed(0)} ms; GC ${loop?.gc.n} pauses, ${loop?.gc.totalMs.toFixed(0)} ms, longest ${loop?.gc.maxMs.toFixed(0)} ms` }
      )
    }
    return rows
  } finally {
    await server.stop()
  }
}
