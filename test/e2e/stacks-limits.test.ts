// The attachment upload limit end to end: a real server (limit set through its blobs layer)
// on a real port. A declared size past the limit is refused before any byte is read, a
// streamed body when it passes the limit; either way a 413 naming the limit, no blob kept,
// and the frame can still be uploaded within the limit.
import { serve } from "@hono/node-server"
import { mkdtemp, readdir, rm } from "node:fs/promises"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Layer } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Stacks } from "@dstack-ts/client"
import { UnstorageBlobStore } from "@dstack-ts/blob-unstorage"

const { layerFs } = UnstorageBlobStore
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerStackUploadLimit } from "../../core/src/stacks/server/index.ts"

const LIMIT = 64 * 1024
const TOKEN = "limits-admin-token"
let server: Server
let http: ReturnType<typeof serve>
let url: string
let blobDir: string

beforeAll(async () => {
  blobDir = await mkdtemp(join(tmpdir(), "dstack-stack-limits-"))
  server = await createServer({
    state: EmbeddedStateStore.layerMemory(),
    blobs: Layer.merge(layerFs({ base: blobDir }), layerStackUploadLimit(LIMIT)),
    adminToken: TOKEN,
    engine: { resyncMs: 60_000 }
  })
  http = serve({ fetch: server.app.fetch, port: 0, hostname: "127.0.0.1" })
  await new Promise<void>((resolve) => http.once("listening", () => resolve()))
  url = `http://127.0.0.1:${(http.address() as AddressInfo).port}`
}, 60_000)
afterAll(async () => {
  await new Promise<void>((resolve) => http?.close(() => resolve()))
  await server?.close()
  if (blobDir) await rm(blobDir, { recursive: true, force: true })
})

const headers = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }

const createFrame = async (stack: string) => {
  const res = await fetch(`${url}/api/stacks/frames/create`, {
    method: "POST",
    headers,
    body: JSON.stringify({ stack, attachments: [{ content_type: "application/octet-stream", application: "bytes" }] })
  })
  expect(res.status).toBe(200)
  return ((await res.json()) as { frame_id: string }).frame_id
}

const upload = (frameId: string, body: BodyInit, extra: RequestInit = {}) =>
  fetch(`${url}/api/stacks/frames/${frameId}/attachments/0`, {
    method: "PUT",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/octet-stream" },
    body,
    ...extra
  } as RequestInit)

const storedChunks = async () => {
  const walk = async (dir: string): Promise<number> => {
    let n = 0
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      n += e.isDirectory() ? await walk(join(dir, e.name)) : 1
    }
    return n
  }
  return walk(join(blobDir, "chunks"))
}

describe("the stack upload limit", () => {
  it("refuses a declared size past the limit with 413 naming the limit, before reading it", async () => {
    const frameId = await createFrame("admin/too-big")
    const res = await upload(frameId, new Uint8Array(LIMIT + 1))
    expect(res.status).toBe(413)
    const body = (await res.json()) as { detail: Array<{ msg: string; code: string }> }
    expect(body.detail[0].code).toBe("payload_too_large")
    expect(body.detail[0].msg).toBe(`The attachment (${LIMIT + 1} bytes) exceeds the upload limit of 64 KiB`)
    expect(await storedChunks()).toBe(0)
    // The same frame takes a body within the limit, exactly at it.
    const ok = await upload(frameId, new Uint8Array(LIMIT))
    expect(ok.status).toBe(200)
    expect(((await ok.json()) as { size: number }).size).toBe(LIMIT)
  })

  it("refuses a streamed body (no content-length) once it passes the limit, keeping nothing", async () => {
    const frameId = await createFrame("admin/streamed")
    const before = await storedChunks()
    let sent = 0
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 4) return controller.close()
        sent++
        controller.enqueue(new Uint8Array(LIMIT / 2 + 1).fill(sent))
      }
    })
    const res = await upload(frameId, body as unknown as BodyInit, { duplex: "half" } as RequestInit)
    expect(res.status).toBe(413)
    const detail = ((await res.json()) as { detail: Array<{ msg: string }> }).detail[0]
    expect(detail.msg).toBe("The attachment exceeds the upload limit of 64 KiB")
    expect(await storedChunks()).toBe(before)
    const get = await fetch(`${url}/api/stacks/frames/commit`, { method: "POST", headers, body: JSON.stringify({ frame_id: frameId }) })
    expect(get.status).toBe(400)
  })

  it("reaches the SDK as a PayloadTooLarge error with the server's message", async () => {
    const stacks = Stacks.make({ url, token: TOKEN })
    const error = await stacks.push("admin/sdk", new Uint8Array(LIMIT * 2)).then(
      () => undefined,
      (e: unknown) => e as { reason: string; status: number; message: string }
    )
    expect(error?.reason).toBe("PayloadTooLarge")
    expect(error?.status).toBe(413)
    expect(error?.message).toContain("exceeds the upload limit of 64 KiB")
    // A body large enough to go out as a stream of slices is refused the same way.
    const streamed = await stacks.push("admin/sdk", new Uint8Array(3 * 1024 * 1024)).then(
      () => undefined,
      (e: unknown) => e as { reason: string; status: number; message: string }
    )
    expect(streamed?.reason).toBe("PayloadTooLarge")
    expect(streamed?.message).toContain("exceeds the upload limit of 64 KiB")
    // Within the limit the same client pushes and pulls fine.
    const bytes = Uint8Array.from({ length: LIMIT }, (_, i) => i & 0xff)
    await stacks.push("admin/sdk", bytes)
    expect(await stacks.pull("admin/sdk")).toEqual(bytes)
  })
})
