// Abandoned pushes end to end: a real server whose pending frames expire after 1.5 s. A frame
// created and uploaded but never committed is removed with its bytes by the sweep that a
// later push starts; the later push itself, and committed frames, are untouched.
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
import { layerPendingFrameMaxAge } from "../../core/src/stacks/server/index.ts"

const MAX_AGE_MS = 1500
const TOKEN = "pending-admin-token"
let server: Server
let http: ReturnType<typeof serve>
let url: string
let blobDir: string

beforeAll(async () => {
  blobDir = await mkdtemp(join(tmpdir(), "dstack-stack-pending-"))
  server = await createServer({
    state: EmbeddedStateStore.layerMemory(),
    blobs: Layer.merge(layerFs({ base: blobDir }), layerPendingFrameMaxAge(MAX_AGE_MS)),
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
const post = (path: string, body: unknown) => fetch(`${url}${path}`, { method: "POST", headers, body: JSON.stringify(body) })

const createFrame = async (stack: string) => {
  const res = await post("/api/stacks/frames/create", { stack, attachments: [{ content_type: "application/octet-stream", application: "bytes" }] })
  expect(res.status).toBe(200)
  return ((await res.json()) as { frame_id: string }).frame_id
}

const upload = async (frameId: string, bytes: Uint8Array) => {
  const res = await fetch(`${url}/api/stacks/frames/${frameId}/attachments/0`, {
    method: "PUT",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/octet-stream" },
    body: bytes as Uint8Array<ArrayBuffer>
  })
  expect(res.status).toBe(200)
}

/** Manifest files under the blob store: one per stored attachment. */
const manifests = async (): Promise<Array<string>> => {
  const out: Array<string> = []
  const walk = async (dir: string) => {
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await walk(join(dir, e.name))
      else out.push(join(dir, e.name))
    }
  }
  await walk(join(blobDir, "manifests"))
  return out
}

describe("pending frames", () => {
  it("are removed with their uploaded bytes once older than the max age; committed ones stay", async () => {
    const stacks = Stacks.make({ url, token: TOKEN })
    await stacks.push("/admin/kept", new Uint8Array([1, 2, 3]))
    const abandoned = await createFrame("admin/abandoned")
    await upload(abandoned, new Uint8Array(1000).fill(7))
    expect((await manifests()).some((m) => m.includes(abandoned))).toBe(true)

    await new Promise((r) => setTimeout(r, MAX_AGE_MS + 500))
    // A later push starts the sweep in the background; it completes normally itself.
    const fresh = await createFrame("admin/fresh")
    // The frame row goes first, then its bytes.
    let gone = false
    for (let i = 0; i < 100 && !gone; i++) {
      const res = await post("/api/stacks/frames/commit", { frame_id: abandoned })
      gone = res.status === 404 && !(await manifests()).some((m) => m.includes(abandoned))
      if (!gone) await new Promise((r) => setTimeout(r, 100))
    }
    expect(gone).toBe(true)

    await upload(fresh, new Uint8Array([9]))
    expect((await post("/api/stacks/frames/commit", { frame_id: fresh })).status).toBe(200)
    expect(await stacks.pull("/admin/fresh")).toEqual(new Uint8Array([9]))
    expect(await stacks.pull("/admin/kept")).toEqual(new Uint8Array([1, 2, 3]))
  }, 60_000)
})
