// Helpers for the runner tests: a job spec on the wire, a tar.gz of files, and a
// Server-Sent Events reader for the live log stream.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as tar from "tar"
import { afterEach } from "vitest"
import executorProcess from "@dstack-ts/executor-process"
import { type RunningRunner, serveRunner } from "../../src/runner/serveRunner.ts"

/** A submit body (snake_case, as the server sends it) for a job with these commands. */
export const submitBody = (jobSpec: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  run: { id: "run-id", run_spec: { run_name: "my-run", repo_id: "my-repo" } },
  job_spec: { job_name: "my-run-0-0", requirements: { resources: {} }, ...jobSpec },
  cluster_info: { job_ips: ["10.0.0.1", "10.0.0.2"], master_job_ip: "10.0.0.1", gpus_per_job: 0 },
  secrets: {},
  ...extra
})

export const tmpDir = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), prefix))

/** A tar.gz holding `files` (path → content). */
export const tarGz = async (files: Record<string, string>): Promise<Uint8Array> => {
  const dir = tmpDir("dstack-ts-code-")
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true })
    fs.writeFileSync(path.join(dir, name), content)
  }
  const chunks: Array<Buffer> = []
  const stream = tar.c({ gzip: true, cwd: dir }, Object.keys(files))
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk)
  fs.rmSync(dir, { recursive: true, force: true })
  return new Uint8Array(Buffer.concat(chunks))
}

export interface SseEvent {
  readonly event: string
  readonly id?: string
  readonly data: string
  /** When the client received it (ms). */
  readonly receivedAt: number
}

/** Reads an SSE response until the `end` event or the stream closes. */
export const readSse = async (response: Response, onEvent?: (event: SseEvent) => void): Promise<Array<SseEvent>> => {
  const events: Array<SseEvent> = []
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ""
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return events
    buffer += value
    let sep: number
    while ((sep = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, sep)
      buffer = buffer.slice(sep + 2)
      let event = "message"
      let id: string | undefined
      const data: Array<string> = []
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim()
        else if (line.startsWith("id:")) id = line.slice(3).trim()
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart())
      }
      const parsed: SseEvent = { event, ...(id ? { id } : {}), data: data.join("\n"), receivedAt: Date.now() }
      events.push(parsed)
      onEvent?.(parsed)
      if (event === "end") {
        await reader.cancel()
        return events
      }
    }
  }
}

export const decodeMessage = (base64: string): string => Buffer.from(base64, "base64").toString("utf8")

/** The job output in a pull answer or a list of SSE log events, as text. */
export const logText = (logs: ReadonlyArray<{ message: string }>): string => logs.map((l) => decodeMessage(l.message)).join("")

/**
 * A runner with the process executor on a free port, served in-process and closed after each
 * test of the suite that made this starter (call it at the suite's top level).
 */
export const processRunners = (prefix: string): (() => Promise<RunningRunner>) => {
  const runners: Array<RunningRunner> = []
  afterEach(async () => {
    await Promise.all(runners.splice(0).map((r) => r.close()))
  })
  return async () => {
    const runner = await serveRunner({ port: 0, workDir: tmpDir(prefix), plugins: [executorProcess] })
    runners.push(runner)
    return runner
  }
}

/** POSTs JSON (or nothing) to a runner route; anything but 200 throws with the answer. */
export const postOk = async (runner: RunningRunner, route: string, body?: unknown) => {
  const res = await fetch(`${runner.url}${route}`, { method: "POST", ...(body !== undefined ? { body: JSON.stringify(body), headers: { "content-type": "application/json" } } : {}) })
  if (res.status !== 200) throw new Error(`${route}: HTTP ${res.status} ${await res.text()}`)
  return res.json()
}
