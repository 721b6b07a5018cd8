// The live log's two representations end to end: a real server (embedded state store), a real
// runner and process job. Binary frames (`Accept: application/x-dstack-ts-logs`, what the SDK
// asks for) carry the bytes the job wrote, invalid UTF-8 included; Server-Sent Events carry
// the same text as JSON, escaped byte for byte, with U+FFFD for bytes that are not UTF-8.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { encodeLogFrames, LOG_FRAMES_TYPE, LogFrameDecoder } from "../../core/src/api/logFrames.ts"
import { logFrames } from "../../client/src/RunLogs.ts"
import { appCall } from "../support/api.ts"
import { makeInProcessPlugin } from "../support/inprocess-backend.ts"

const TOKEN = "logs-stream-e2e-token"
let server: Server
const inproc = makeInProcessPlugin()
const call = appCall(() => server, TOKEN)

const runSpec = (commands: Array<string>, runName: string) => ({
  run_spec: {
    run_name: runName,
    repo_id: "e2e",
    repo_data: { repo_type: "virtual" },
    configuration: { type: "task", commands, resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } }
  }
})

const waitStarted = async (name: string) => {
  const start = Date.now()
  while (Date.now() - start < 20_000) {
    const run = (await call("/api/project/main/runs/get", { run_name: name })).body
    if (run?.jobs?.[0]?.job_submissions?.[0]?.status !== "submitted") return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`run ${name} did not start`)
}

const stream = (name: string, accept: string) =>
  server.app.request(`/api/project/main/logs/stream?run_name=${name}`, { headers: { authorization: `Bearer ${TOKEN}`, accept } })

// Quote, backslash, tab, a control byte, é, a lone 0xff, then numbered lines (valid UTF-8) after pauses.
const COMMAND = String.raw`printf 'a"b\\c\td\001e \303\251 \377 end\n'; for i in 1 2 3; do sleep 0.1; printf 'tick %s \303\251\n' $i; done`
const EXPECTED = Buffer.concat([
  Buffer.from('a"b\\c\td\u0001e ', "latin1"),
  Buffer.from([0xc3, 0xa9, 0x20, 0xff]),
  Buffer.from(" end\ntick 1 é\ntick 2 é\ntick 3 é\n", "utf8")
])

// Both log stores of the embedded default: job logs in files on disk (what a server uses; a
// page of the binary stream goes out as the bytes read from the file) and in SQL (in memory;
// frames built from the events, as with PostgreSQL).
const disk = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-logs-stream-"))
const servers: Record<string, Server> = {}
beforeAll(async () => {
  for (const [name, state] of [["disk", EmbeddedStateStore.layer({ dataDir: path.join(disk, "state") })], ["memory", EmbeddedStateStore.layerMemory()]] as const) {
    servers[name] = await createServer({
      state,
      blobs: blobsMemory,
      adminToken: TOKEN,
      plugins: [inproc.plugin],
      compute: { defaultBackends: [{ type: "inprocess" }] },
      engine: { resyncMs: 60_000 }
    })
  }
}, 120_000)
afterAll(async () => {
  for (const s of Object.values(servers)) await s.close()
  fs.rmSync(disk, { recursive: true, force: true })
})

describe.each(["disk", "memory"])("logs/stream, logs %s", (store) => {
  beforeAll(() => {
    server = servers[store]
  })

  it("sends the job's bytes as binary frames, then end with the run's status", async () => {
    await call("/api/project/main/runs/apply", { plan: runSpec([COMMAND], "frames-run") })
    await waitStarted("frames-run")
    const res = await stream("frames-run", LOG_FRAMES_TYPE)
    expect(res.status).toBe(200)
    expect(res.headers.get("content-type")).toBe("application/x-dstack-ts-logs; version=1")
    expect(res.headers.get("cache-control")).toBe("no-cache")
    const body = new Uint8Array(await res.arrayBuffer())
    // Fed a byte at a time at odd places and all at once, the decoder finds the same frames.
    const decode = (chunks: Array<Uint8Array>) => {
      const decoder = new LogFrameDecoder()
      const frames = chunks.flatMap((c) => decoder.push(c).map((f) => ({ ...f, payload: Buffer.from(f.payload) })))
      expect(decoder.pending).toBe(0)
      return frames
    }
    const whole = decode([body])
    const cuts = [1, 5, 17, 18, 40]
    const pieces = cuts.map((at, i) => body.subarray(i === 0 ? 0 : cuts[i - 1], at)).concat([body.subarray(cuts[cuts.length - 1])])
    expect(decode(pieces)).toEqual(whole)
    const output = Buffer.concat(whole.filter((f) => f.kind === "stdout").map((f) => f.payload))
    expect(output.equals(EXPECTED)).toBe(true)
    const last = whole[whole.length - 1]
    expect(last.kind).toBe("end")
    expect(JSON.parse(Buffer.from(last.payload).toString())).toMatchObject({ status: "done", job_status: "done" })
    // The SDK's reader of the same bytes, cut at odd places, yields the same output.
    const readable = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const piece of pieces) controller.enqueue(piece)
        controller.close()
      }
    })
    const got: Array<Uint8Array> = []
    for await (const chunk of logFrames(readable)) got.push(chunk)
    expect(Buffer.concat(got).equals(EXPECTED)).toBe(true)
  })

  it("sends the same output as SSE of JSON, escaped as JSON.stringify does, U+FFFD for bytes that are not UTF-8", async () => {
    const res = await stream("frames-run", "text/event-stream")
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/)
    const text = await res.text()
    const data = [...text.matchAll(/^event: logs\ndata: (.*)$/gm)].map((m) => m[1])
    const events = data.flatMap((d) => JSON.parse(d) as Array<{ message: string; log_source: string; timestamp: string }>)
    expect(events.map((e) => e.message).join("")).toBe(new TextDecoder().decode(EXPECTED))
    expect(events.every((e) => e.log_source === "stdout" && !Number.isNaN(Date.parse(e.timestamp)))).toBe(true)
    // Byte for byte what JSON.stringify of the decoded message gives.
    for (const d of data) expect(d).toBe(JSON.stringify(JSON.parse(d)))
    expect(res.headers.get("cache-control")).toBe("no-cache")
    // Nothing but logs events and, last, the end event, each a blank line apart.
    expect(text.split("\n\n").slice(0, -2).every((block) => /^event: logs\ndata: \[.*\]$/.test(block))).toBe(true)
    expect(text.endsWith('event: end\ndata: {"status":"done","job_status":"done"}\n\n')).toBe(true)
  })

})

describe("logs/stream frames", () => {
  it("decodes frames cut anywhere (a byte at a time, inside headers, big frames over many reads) from reused chunks", () => {
    const payload = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff)
    const frames = [0, 1, 15, 16, 17, 70_000, 300_000].map((n, i) => ({ kind: (["stdout", "stderr", "runner"] as const)[i % 3], timestamp: 1_000 + i, payload: payload(n, i) }))
    const all = [...frames, { kind: "end" as const, timestamp: 2_000, payload: new TextEncoder().encode('{"status":"done"}') }]
    const stream = encodeLogFrames(all)
    const expected = all.map((f) => ({ ...f, payload: Buffer.from(f.payload).toString("base64") }))
    let seed = 3
    const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 40_000) + 1
    for (const size of [1, 3, 16, 17, 65_536, random, random, random]) {
      const decoder = new LogFrameDecoder()
      const got: Array<unknown> = []
      const scratch = new Uint8Array(stream.byteLength)
      for (let pos = 0; pos < stream.byteLength;) {
        const n = Math.min(typeof size === "number" ? size : size(), stream.byteLength - pos)
        const chunk = scratch.subarray(0, n)
        chunk.set(stream.subarray(pos, pos + n))
        for (const f of decoder.push(chunk)) got.push({ ...f, payload: Buffer.from(f.payload).toString("base64") })
        chunk.fill(0xee)
        pos += n
      }
      expect(decoder.pending).toBe(0)
      expect(got).toEqual(expected)
    }
  })

  it("refuses a stream cut before its end frame", async () => {
    const frames = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new Uint8Array([0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 104]))
        controller.close()
      }
    })
    const got: Array<Uint8Array> = []
    await expect((async () => {
      for await (const chunk of logFrames(frames)) got.push(chunk)
    })()).rejects.toThrow(/ended without its end frame \(17 bytes of a frame cut off\)/)
  })

  it("refuses a frame of an unknown kind, naming it", () => {
    expect(() => new LogFrameDecoder().push(new Uint8Array(16).fill(9, 0, 1))).toThrow(/unknown frame kind 9/)
  })
})
