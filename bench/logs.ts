// Row 4: logs from a job to a following client. The job (process executor, local backend)
// writes N MB of numbered 100-byte lines; the client follows `logs/stream` (raw fetch, SSE),
// counts every line by its number (lost and repeated), and measures MB/s. Meanwhile the
// server's RSS is sampled from /proc and `runs/get` is called in a loop (c=1) for its p99.
// Baseline: the same command piped to cat (`bash -c 'cmd | cat > /dev/null'`).
//   BENCH_LOGS_MB (default 100; full 1,000)
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import { apply, FINISHED, openLogStream, waitRun } from "./support/api.ts"
import { post } from "./support/load.ts"
import { startServer } from "./support/server.ts"
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
    const cpu0 = { server: cpuSeconds(server.pid), client: process.cpuUsage() }
    let runnerCpu = 0
    const runnerSampler = setInterval(() => (runnerCpu = Math.max(runnerCpu, runnersCpu(server.pid))), 50)
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
          if (Number.isNaN(firstAt)) firstAt = now()
          for (const e of JSON.parse(data) as Array<{ message: string }>) onMessage(e.message)
        } else if (ev === "end" || ev === "error") ended = `${ev} ${data}`
      }
      searched = Math.max(0, buffer.length - 1)
    }
    const lastAt = now()
    clearInterval(runnerSampler)
    const clientCpu = process.cpuUsage(cpu0.client)
    const cpu = { server: cpuSeconds(server.pid) - cpu0.server, runner: runnerCpu, client: (clientCpu.user + clientCpu.system) / 1e6 }
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
    const cpuNote = `CPU s per 100 MB: server ${(cpu.server * 100 / mb).toFixed(2)}, runner ${(cpu.runner * 100 / mb).toFixed(2)}, client ${(cpu.client * 100 / mb).toFixed(2)}`
    ctx.log(`logs: ${cpuNote}`)
    ctx.log(`logs: ${streamMBps.toFixed(1)} MB/s (submit→end ${totalMBps.toFixed(1)} MB/s), lost ${lost}, repeated ${repeated}, rss ${rssStart.toFixed(0)}→${rssPeak.toFixed(0)} MiB, runs/get p99 ${get.p99.toFixed(0)} ms; run ${finished.run.status}; ${ended.slice(0, 120)}`)
    return [
      { section: "4 logs", measure: `${mb} MB job → following client, first to last byte`, unit: "MB/s", value: streamMBps, baseline: baseMBps, better: "higher", target: "≥ 100 MB/s", verdict: streamMBps >= 100 ? "meets" : "short", note: `submit → last byte ${totalMBps.toFixed(1)} MB/s; baseline \`cmd \\| cat\`; run ${finished.run.status}; ${cpuNote}` },
      { section: "4 logs", measure: "lines lost / repeated", unit: "lines", value: lost, better: "lower", target: "0 lost", verdict: lost === 0 ? "meets" : "short", note: `${repeated} repeated, ${bad} malformed, of ${lines.toLocaleString("en-US")}` },
      { section: "4 logs", measure: "server RSS peak while it flows", unit: "MiB", value: rssPeak, better: "lower", target: "< 200 MB", verdict: rssPeak * 1.048576 < 200 ? "meets" : "short", note: `${rssStart.toFixed(0)} MiB before the run` },
      { section: "4 logs", measure: "runs/get latency while it flows (c=1)", unit: "ms", value: get, better: "lower", target: "p99 < 50 ms", verdict: get.p99 < 50 ? "meets" : "short", note: `n=${get.n}` }
    ]
  } finally {
    await server.stop()
  }
}
