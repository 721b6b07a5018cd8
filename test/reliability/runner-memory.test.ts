// A runner's memory under a job that writes gigabytes: the runner program (core's runnerMain
// with the process executor, as a process of its own) runs a job that writes RUNNER_LOG_MB of
// output (2,048 in `npm run test:faults`, ~2 min; 64 by default, past the runner's 32 MiB in
// memory so that output spills to disk and the acknowledgment must clear it) with no log quota, while this test
// reads it as the server does — the binary event stream from a cursor, and a health check every
// second that acknowledges what it has read (`?acknowledged=`). The runner's resident memory
// (VmHWM, its peak, from /proc) must stay within a fixed allowance above what it was when the
// runner was ready, an allowance that does not grow with the log,
// every line must come through once and whole, and once everything is acknowledged no spill
// file is left on disk.
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, describe, expect, it } from "vitest"
import * as RunnerCommand from "../../core/src/runner/launch/RunnerCommand.ts"
import { EVENT_STREAM_CONTENT_TYPE, FrameDecoder } from "../../core/src/runner/EventStream.ts"
import { submitBody } from "../../core/test/runner/support.ts"

const here = path.dirname(fileURLToPath(import.meta.url))
const MAIN = path.resolve(here, "../../core/test/runner/fixtures/runner-build.ts")
const LOG_MB = Number(process.env.RUNNER_LOG_MB ?? 64)
const LOG_BYTES = LOG_MB * 1024 * 1024
/** Every line is this long, newline included: `yes` of a fixed text. */
const LINE = 100
/**
 * The runner's peak resident memory may pass its resident memory once it is ready by at most
 * this, whatever the log's size: it keeps 32 MiB of output in memory, and the rest is the
 * runtime's garbage collection lagging behind (measured under 2 GiB: 103–108 MiB above on Node, 161–164 MiB on Deno,
 * whose runner starts smaller).
 */
const RSS_GROWTH_CEILING_MB = 256

/** VmRSS and VmHWM of a process, in MiB. */
const memoryOf = (pid: number): { rss: number; hwm: number } => {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN)
  return { rss: kb("VmRSS") / 1024, hwm: kb("VmHWM") / 1024 }
}

/** Bytes of the files under `dir` (0 when it does not exist). */
const bytesUnder = (dir: string): number => {
  let total = 0
  for (const entry of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    try {
      total += fs.statSync(path.join(dir, entry)).size
    } catch {
      // removed meanwhile
    }
  }
  return total
}

if (!(LOG_MB > 0)) throw new Error(`RUNNER_LOG_MB must be a positive number of MiB, got ${process.env.RUNNER_LOG_MB}`)

describe(`a runner under a job writing ${LOG_MB} MiB of output`, () => {
  let child: ChildProcess | undefined
  let workDir = ""

  afterAll(async () => {
    if (child?.exitCode === null) {
      const exited = new Promise((resolve) => child!.once("exit", resolve))
      child.kill("SIGTERM")
      await exited
    }
    if (workDir !== "") fs.rmSync(workDir, { recursive: true, force: true })
  })

  it("keeps its memory within a fixed allowance, loses no line, and drops what is acknowledged", async () => {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-runner-memory-"))
    const command = RunnerCommand.forRuntime()(MAIN, ["--port", "0", "--work-dir", workDir])
    child = spawn(command.file, [...command.args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUNNER_FIXTURE_PLUGIN: "process" } })
    let stderr = ""
    child.stderr!.on("data", (d: Buffer) => (stderr += d))
    const ready = await new Promise<string>((resolve, reject) => {
      let out = ""
      child!.stdout!.on("data", (d: Buffer) => {
        out += d
        if (out.includes("\n")) resolve(out.split("\n")[0])
      })
      child!.once("exit", () => reject(new Error(`the runner exited before it was ready: ${stderr}`)))
    })
    const url = `http://127.0.0.1:${JSON.parse(ready).port}`
    const pid = child.pid!
    const baseline = memoryOf(pid)

    // No log_quota_hour in the submission: no quota (the server sends its 50 MiB default).
    const text = "x".repeat(LINE - 1)
    const post = async (route: string, body?: unknown) => {
      const res = await fetch(`${url}${route}`, { method: "POST", ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }) })
      expect(res.status, `${route}: ${await res.clone().text()}`).toBe(200)
      await res.body?.cancel()
    }
    await post("/api/submit", submitBody({ commands: [`yes ${text} | head -c ${LOG_BYTES}`] }))
    await post("/api/run")

    let cursor = 0
    let bytes = 0
    let newlines = 0
    let misplaced = 0
    let runnerLogs = ""
    let final: string | undefined
    let samples = 0
    let hwmAtTenth = 0
    let peakSpill = 0
    let acknowledging = true
    const sample = () => {
      memoryOf(pid)
      peakSpill = Math.max(peakSpill, bytesUnder(path.join(workDir, "output")))
      samples++
    }
    // The server's health check: every second, with the newest event it has stored.
    const acks = (async () => {
      while (acknowledging) {
        await new Promise((r) => setTimeout(r, 1000))
        const res = await fetch(`${url}/api/healthcheck?acknowledged=${cursor}`)
        expect(res.status).toBe(200)
        await res.text()
        sample()
      }
    })()

    const decoder = new FrameDecoder()
    const res = await fetch(`${url}/logs_stream?timestamp=0`, { headers: { accept: EVENT_STREAM_CONTENT_TYPE } })
    expect(res.headers.get("content-type")).toContain("application/x-dstack-ts-events")
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      for (const event of decoder.push(chunk)) {
        cursor = Math.max(cursor, event.timestamp)
        if (event.kind === "log") {
          const m = event.message
          // Each line ends exactly every LINE bytes of the whole output, and nowhere else.
          for (let i = m.indexOf(10); i >= 0; i = m.indexOf(10, i + 1)) {
            newlines++
            if ((bytes + i + 1) % LINE !== 0) misplaced++
          }
          bytes += m.byteLength
          if (hwmAtTenth === 0 && bytes >= LOG_BYTES / 10) hwmAtTenth = memoryOf(pid).hwm
        } else if (event.kind === "runner_log") runnerLogs += new TextDecoder().decode(event.message)
        else if (event.kind === "state") final = event.state.state
      }
    }
    acknowledging = false
    await acks
    // The last acknowledgment: everything is stored.
    await (await fetch(`${url}/api/healthcheck?acknowledged=${cursor}`)).text()
    const end = memoryOf(pid)
    const spillLeft = bytesUnder(path.join(workDir, "output"))
    console.log(
      `runner memory under ${LOG_MB} MiB of output: VmRSS ${baseline.rss.toFixed(0)} MiB at start; VmHWM ${hwmAtTenth.toFixed(0)} MiB after a tenth, ${end.hwm.toFixed(0)} MiB at the end (VmRSS ${end.rss.toFixed(0)}); ` +
        `spill on disk at most ${(peakSpill / 2 ** 20).toFixed(0)} MiB, ${spillLeft} bytes after the last acknowledgment; ${samples} samples`
    )

    expect(final).toBe("done")
    expect(runnerLogs).not.toContain("dropped")
    expect(decoder.buffered).toBe(0)
    expect(bytes).toBe(LOG_BYTES)
    expect(newlines).toBe(Math.floor(LOG_BYTES / LINE))
    expect(misplaced).toBe(0)
    expect(end.hwm - baseline.rss, `peak ${end.hwm.toFixed(0)} MiB, ready at ${baseline.rss.toFixed(0)} MiB`).toBeLessThan(RSS_GROWTH_CEILING_MB)
    expect(spillLeft).toBe(0)
  }, 20 * 60_000)
})
