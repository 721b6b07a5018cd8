// A large attachment streams through the server: a generated 256 MiB body is pushed (raw PUT,
// streamed into the fs BlobStore) and pulled back (streamed download), and the process's
// RSS and heap grow by far less than the size. Server and client share this process, so the
// figures bound both sides.
import { createHash } from "node:crypto"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Stacks } from "@dstack-ts/client"
import { startStackServer, type StackServer } from "../browser/stackServer.ts"

const SIZE = 256 * 1024 * 1024
const CHUNK = 1024 * 1024
let s: StackServer
let token: string

beforeAll(async () => {
  s = await startStackServer()
  token = await s.createUser("big")
}, 60_000)
afterAll(async () => {
  await s?.close()
})

// One chunk, never mutated, sent again and again: the generator itself allocates nothing, so
// any growth measured is the transfer's.
const CHUNK_BYTES = Uint8Array.from({ length: CHUNK }, (_, i) => (i * 31) & 0xff)

const generated = (hash: ReturnType<typeof createHash>) => {
  let sent = 0
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= SIZE) return controller.close()
      const chunk = CHUNK_BYTES
      hash.update(chunk)
      sent += CHUNK
      controller.enqueue(chunk)
    }
  })
}

// A full collection before each sample, so that what is measured is what the transfer keeps
// alive, not garbage the collector has not reached yet (Deno releases freed array buffers
// lazily, so its RSS peak otherwise depends on when it happened to collect). Node and Deno.
// Every 500 ms: a full collection per 100 ms took most of the time on a busy machine (Deno
// ran past the timeout), and buffering the body would still show at this rate.
v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void

// Each reading collects twice: the second collection finishes releasing the bytes of the
// ArrayBuffers the first found dead, which one collection leaves counted in `external`.
const sampler = () => {
  gc()
  gc()
  const base = process.memoryUsage()
  let peakRss = base.rss
  let peakHeap = base.heapUsed
  let peakExternal = base.external
  const timer = setInterval(() => {
    gc()
    gc()
    const m = process.memoryUsage()
    peakRss = Math.max(peakRss, m.rss)
    peakHeap = Math.max(peakHeap, m.heapUsed)
    peakExternal = Math.max(peakExternal, m.external)
  }, 500)
  return () => {
    clearInterval(timer)
    const mib = (n: number) => n / 2 ** 20
    return { rss: mib(peakRss - base.rss), heap: mib(peakHeap - base.heapUsed), external: mib(peakExternal - base.external) }
  }
}

describe("a 256 MiB attachment", () => {
  it("pushes and pulls with memory far below its size", async () => {
    const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" }
    const created = (await (await fetch(`${s.url}/api/stacks/frames/create`, {
      method: "POST",
      headers,
      body: JSON.stringify({ stack: "big/blob", attachments: [{ content_type: "application/octet-stream", application: "bytes" }] })
    })).json()) as { frame_id: string }

    const pushHash = createHash("sha256")
    const stopPush = sampler()
    const t0 = performance.now()
    const put = await fetch(`${s.url}/api/stacks/frames/${created.frame_id}/attachments/0`, {
      method: "PUT",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream" },
      body: generated(pushHash),
      duplex: "half"
    } as RequestInit)
    const uploaded = (await put.json()) as { size: number; digest: string }
    const pushMs = performance.now() - t0
    const pushGrowth = stopPush()
    expect(put.status).toBe(200)
    expect(uploaded.size).toBe(SIZE)
    expect(uploaded.digest).toBe(pushHash.digest("hex"))
    const commit = await fetch(`${s.url}/api/stacks/frames/commit`, { method: "POST", headers, body: JSON.stringify({ frame_id: created.frame_id }) })
    expect(commit.status).toBe(200)

    const stopPull = sampler()
    const t1 = performance.now()
    const raw = await Stacks.make({ url: s.url, token }).pullRaw("blob")
    const pullHash = createHash("sha256")
    let received = 0
    const reader = raw.response.body!.getReader()
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      received += value.length
      pullHash.update(value)
    }
    const pullMs = performance.now() - t1
    const pullGrowth = stopPull()
    expect(received).toBe(SIZE)
    expect(pullHash.digest("hex")).toBe(uploaded.digest)

    const said = (g: typeof pushGrowth) => `RSS +${g.rss.toFixed(1)} MiB, heap +${g.heap.toFixed(1)} MiB, external +${g.external.toFixed(1)} MiB`
    console.log(`256 MiB push: ${pushMs.toFixed(0)} ms, ${said(pushGrowth)}; pull: ${pullMs.toFixed(0)} ms, ${said(pullGrowth)}`)
    // Far below the 256 MiB that buffering would take (on either side): what the transfer keeps
    // alive (the heap, and the bytes outside it) after a full collection, on both runtimes, and
    // Node's RSS. Deno's RSS is not a measure of it: its allocator hands freed pages back late,
    // so a fast pull grew it by 197–264 MiB with 24 MiB alive (and by ~60 MiB when the reader
    // paused every 16 MiB, so it does not read ahead of its reader).
    for (const growth of [pushGrowth, pullGrowth]) {
      expect(growth.heap).toBeLessThan(64)
      expect(growth.external).toBeLessThan(96)
      if (!("Deno" in globalThis)) expect(growth.rss).toBeLessThan(96)
    }
  }, 180_000)
})
