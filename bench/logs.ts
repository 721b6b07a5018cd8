// Row 4: logs from a job to a following client. The job (process executor, local backend)
// writes N MB of numbered 100-byte lines; the client follows `logs/stream` (raw fetch, SSE),
// counts every line by its number (lost and repeated), and measures MB/s. Meanwhile the
// server's RSS is sampled from /proc and `runs/get` is called in a loop (c=1) for its p99.
// Baseline: the same command piped to cat (`bash -c 'cmd | cat > /dev/null'`).
//   BENCH_LOGS_MB (default 100; full 1,000)
import { execFile } from "node:child_process"
import * as http from "node:http"
import { apply, FINISHED, openLogStream, waitRun } from "./support/api.ts"
import { post } from "./support/load.ts"
import { startServer } from "./support/server.ts"
import { now, sleep, summarize, type Row } from "./support/stats.ts"
import type { BenchContext } from "./context.ts"

const LINE = 100

/** awk writes lines `%09d` + 90 spaces + newline: exactly 100 bytes each, numbered from 1. */
const command = (lines: number) => `awk 'BEGIN{p=sprintf("%90s",""); for(i=1;i<=${lines};i++) printf "%09d%s\\n", i, p}'`

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const mb = Number(process.env.BENCH_LOGS_MB ?? (ctx.full ? 1000 : 100))
  const lines = Math.floor((mb * 1e6) / LINE)
  const cmd = command(lines)

  // baseline first: the command into cat
  const b0 = now()
  await new Promise<void>((resolve, reject) => execFile("bash", ["-c", `${cmd} | cat > /dev/null`], (e) => (e ? reject(e) : resolve())))
  const baseMBps = (lines * LINE) / 1e6 / ((now() - b0) / 1000)

  const server = await startServer({ maxInstances: 1, databaseUrl: ctx.databaseUrl })
  try {
    const rssStart = server.rssMiB()
    let rssPeak = rssStart
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, server.rssMiB())), 100)
    // runs/get at c=1 while the log flows
    const getLatencies: Array<number> = []
    let flowing = true
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    const prober = (async () => {
      while (flowing) {
        const t = now()
        await post(agent, { url: server.url, path: "/api/project/main/runs/get", body: JSON.stringify({ run_name: "logs-flow" }), token: server.token }).catch(() => undefined)
        getLatencies.push(now() - t)
        await sleep(10)
      }
    })()

    ctx.log(`logs: ${mb} MB (${lines.toLocaleString("en-US")} lines) to a following client`)
    const t0 = now()
    await apply(server, "logs-flow", [cmd])
    const body = await openLogStream(server, "logs-flow")
    const reader = body.getReader()
    const decoder = new TextDecoder()
    const seen = new Uint8Array(lines + 1)
    let repeated = 0
    let bad = 0
    let bytes = 0
    let firstAt = Number.NaN
    let buffer = ""
    let partial = ""
    let ended = ""
    const onMessage = (message: string) => {
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
    }
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      buffer += decoder.decode(value, { stream: true })
      let end: number
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        const ev = /^event: (.*)$/m.exec(block)?.[1]
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n")
        if (ev === "logs") {
          if (Number.isNaN(firstAt)) firstAt = now()
          for (const e of JSON.parse(data) as Array<{ message: string }>) onMessage(e.message)
        } else if (ev === "end" || ev === "error") ended = `${ev} ${data}`
      }
    }
    const lastAt = now()
    flowing = false
    await prober
    agent.destroy()
    clearInterval(sampler)
    const finished = await waitRun(server, "logs-flow", (r) => FINISHED.includes(r.status), { timeoutMs: 60_000 })
    let received = 0
    for (let i = 1; i <= lines; i++) received += seen[i]!
    const lost = lines - received
    const streamMBps = bytes / 1e6 / ((lastAt - firstAt) / 1000)
    const totalMBps = bytes / 1e6 / ((lastAt - t0) / 1000)
    const get = summarize(getLatencies)
    ctx.log(`logs: ${streamMBps.toFixed(1)} MB/s (submit→end ${totalMBps.toFixed(1)} MB/s), lost ${lost}, repeated ${repeated}, rss ${rssStart.toFixed(0)}→${rssPeak.toFixed(0)} MiB, runs/get p99 ${get.p99.toFixed(0)} ms; run ${finished.run.status}; ${ended.slice(0, 120)}`)
    return [
      { section: "4 logs", measure: `${mb} MB job → following client, first to last byte`, unit: "MB/s", value: streamMBps, baseline: baseMBps, better: "higher", target: "≥ 100 MB/s", verdict: streamMBps >= 100 ? "meets" : "short", note: `submit → last byte ${totalMBps.toFixed(1)} MB/s; baseline \`cmd \\| cat\`; run ${finished.run.status}` },
      { section: "4 logs", measure: "lines lost / repeated", unit: "lines", value: lost, better: "lower", target: "0 lost", verdict: lost === 0 ? "meets" : "short", note: `${repeated} repeated, ${bad} malformed, of ${lines.toLocaleString("en-US")}` },
      { section: "4 logs", measure: "server RSS peak while it flows", unit: "MiB", value: rssPeak, better: "lower", target: "< 200 MB", verdict: rssPeak * 1.048576 < 200 ? "meets" : "short", note: `${rssStart.toFixed(0)} MiB before the run` },
      { section: "4 logs", measure: "runs/get latency while it flows (c=1)", unit: "ms", value: get, better: "lower", target: "p99 < 50 ms", verdict: get.p99 < 50 ? "meets" : "short", note: `n=${get.n}` }
    ]
  } finally {
    await server.stop()
  }
}
