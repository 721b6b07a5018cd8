// The repos API over the real server (embedded state store, in-memory blobs): init/get/list/
// delete, and upload_code keyed by hash — stored once, hash checked, size limited, members only.
import * as path from "node:path"
import { Chunk, Effect, Layer, Stream } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { BlobStore, layerMemory as blobsMemory } from "../../src/ports/BlobStore.ts"
import { StateStore } from "../../src/ports/StateStore.ts"
import { LocalRepo, VirtualRepo, materializeRepo } from "../../src/repos/index.ts"
import { createServer, runOn } from "../../src/server/createServer.ts"
import type { Server } from "../../src/server/createServer.ts"
import { layerCodeUploadLimit } from "../../src/server/routes/repos.ts"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { cleanup, readTree, tempDir, writeTree } from "../repos/support.ts"

let server: Server
const ADMIN = "admin-token-for-repo-tests"
const LIMIT = 64 * 1024
let member: string
let outsider: string

const call = async (p: string, token: string | undefined, body?: unknown) => {
  const res = await server.app.request(p, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  return { status: res.status, body: (await res.json()) as any }
}

const upload = async (token: string, query: Record<string, string>, body: BodyInit, headers: Record<string, string> = {}) => {
  const res = await server.app.request(`/api/project/main/repos/upload_code?${new URLSearchParams(query)}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/octet-stream", ...headers },
    body,
    // A stream body needs half duplex on Node's fetch.
    ...({ duplex: "half" } as object)
  })
  return { status: res.status, body: (await res.json()) as any }
}

const sha256 = async (bytes: Uint8Array): Promise<string> => {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>)
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("")
}

/** A body that never ends: the server can only answer it by stopping to read. */
const endless = (): ReadableStream<Uint8Array> => {
  let sent = 0
  return new ReadableStream({
    pull(controller) {
      sent++
      if (sent > 100_000) controller.error(new Error("the server read far too much"))
      else controller.enqueue(new Uint8Array(16 * 1024).fill(sent % 256))
    }
  })
}

const blobKeys = () => runOn(server, Effect.flatMap(BlobStore, (b) => Stream.runCollect(b.list("codes/"))).pipe(Effect.map(Chunk.toReadonlyArray)))

beforeAll(async () => {
  server = await createServer({
    state: EmbeddedStateStore.layerMemory(),
    blobs: Layer.merge(blobsMemory, layerCodeUploadLimit(LIMIT)),
    adminToken: ADMIN
  })
  member = (await call("/api/users/create", ADMIN, { username: "mia", global_role: "user" })).body.creds.token
  outsider = (await call("/api/users/create", ADMIN, { username: "otto", global_role: "user" })).body.creds.token
  await call("/api/projects/main/add_members", ADMIN, { members: [{ username: "mia", project_role: "user" }] })
}, 60_000)
afterAll(async () => {
  await server?.close()
  cleanup()
})

describe("server: repos", () => {
  it("inits, gets and lists repos; credentials only on request and for managers", async () => {
    const init = await call("/api/project/main/repos/init", member, {
      repo_id: "demo-remote",
      repo_info: { repo_type: "remote", repo_url: "https://github.com/dstackai/dstack-examples", repo_branch: "main" },
      repo_creds: { oauth_token: "secret" }
    })
    expect(init.status).toBe(200)
    const got = await call("/api/project/main/repos/get", member, { repo_id: "demo-remote" })
    expect(got.body).toEqual({ repo_id: "demo-remote", repo_info: { repo_type: "remote", repo_url: "https://github.com/dstackai/dstack-examples", repo_branch: "main" } })
    expect((await call("/api/project/main/repos/get", member, { repo_id: "demo-remote", include_creds: true })).status).toBe(403)
    const withCreds = await call("/api/project/main/repos/get", ADMIN, { repo_id: "demo-remote", include_creds: true })
    expect(withCreds.body.repo_creds).toEqual({ oauth_token: "secret" })
    const list = await call("/api/project/main/repos/list", member)
    expect(list.body.map((r: any) => r.repo_id)).toContain("demo-remote")
    expect((await call("/api/project/main/repos/get", member, { repo_id: "nope" })).status).toBe(400)
  })

  it("refuses bad repo info and ids with the field path", async () => {
    const bad = await call("/api/project/main/repos/init", member, { repo_id: "r1", repo_info: { repo_type: "remote", repo_branch: "main" } })
    expect(bad.status).toBe(422)
    expect(bad.body.detail.map((d: any) => d.loc.join("."))).toContain("body.repo_info.repo_url")
    const badId = await call("/api/project/main/repos/init", member, { repo_id: "../x", repo_info: { repo_type: "virtual" } })
    expect(badId.status).toBe(422)
    expect(badId.body.detail[0].loc).toEqual(["body", "repo_id"])
  })

  it("stores an upload once per hash, checks the hash, and answers a repeat without reading it", async () => {
    await call("/api/project/main/repos/init", member, { repo_id: "virt", repo_info: { repo_type: "virtual" } })
    const code = new TextEncoder().encode("some archive bytes")
    const hash = await sha256(code)
    const first = await upload(member, { repo_id: "virt", hash }, code)
    expect(first).toEqual({ status: 200, body: { repo_id: "virt", hash, size: code.length, stored: true } })
    const keys = await blobKeys()
    expect(keys.filter((k) => k.startsWith("codes/main/virt/"))).toHaveLength(1)

    // The same hash again: answered at once, even though this body would never end.
    const again = await upload(member, { repo_id: "virt", hash }, endless())
    expect(again).toEqual({ status: 200, body: { repo_id: "virt", hash, size: code.length, stored: false } })
    expect(await blobKeys()).toEqual(keys)

    const wrong = await upload(member, { repo_id: "virt", hash: "0".repeat(64) }, code)
    expect(wrong.status).toBe(400)
    expect(wrong.body.detail[0].msg).toContain(hash)
    expect(wrong.body.detail[0].msg).toContain("0".repeat(64))
    expect(await blobKeys()).toEqual(keys)

    const record = await runOn(server, Effect.flatMap(StateStore, (s) => s.codes.get("main", "virt", hash)))
    expect(record.size).toBe(code.length)
    const stored = await runOn(server, Effect.flatMap(BlobStore, (b) => b.getBytes(record.blobKey)))
    expect(new TextDecoder().decode(stored)).toBe("some archive bytes")
  })

  it("refuses a body over the limit with 413 without reading it to the end", async () => {
    await call("/api/project/main/repos/init", member, { repo_id: "big", repo_info: { repo_type: "virtual" } })
    const before = await blobKeys()
    const streamed = await upload(member, { repo_id: "big", hash: "a".repeat(64) }, endless())
    expect(streamed.status).toBe(413)
    expect(streamed.body.detail[0]).toMatchObject({ code: "payload_too_large" })
    expect(streamed.body.detail[0].msg).toContain(String(LIMIT))
    const declared = await upload(member, { repo_id: "big", hash: "a".repeat(64) }, new Uint8Array(10), { "content-length": String(LIMIT * 4) })
    expect(declared.status).toBe(413)
    // Exactly at the limit is fine.
    const atLimit = new Uint8Array(LIMIT).fill(7)
    expect((await upload(member, { repo_id: "big", hash: await sha256(atLimit) }, atLimit)).status).toBe(200)
    expect((await blobKeys()).length).toBe(before.length + 1)
  })

  it("takes multipart uploads with a file part named by its hash", async () => {
    const code = new TextEncoder().encode("multipart archive")
    const hash = await sha256(code)
    const form = new FormData()
    form.set("repo_id", "virt")
    form.set("file", new Blob([code]), hash)
    const res = await server.app.request("/api/project/main/repos/upload_code", {
      method: "POST",
      headers: { authorization: `Bearer ${member}` },
      body: form
    })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ repo_id: "virt", hash, size: code.length, stored: true })
    const noFile = new FormData()
    noFile.set("repo_id", "virt")
    const bad = await server.app.request(`/api/project/main/repos/upload_code?hash=${hash}`, {
      method: "POST",
      headers: { authorization: `Bearer ${member}` },
      body: noFile
    })
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as any).detail[0].msg).toContain("file")
  })

  it("checks access, the repo and the parameters before reading", async () => {
    const code = new Uint8Array([1, 2, 3])
    const hash = await sha256(code)
    expect((await upload(outsider, { repo_id: "virt", hash }, code)).status).toBe(403)
    const anonymous = await server.app.request(`/api/project/main/repos/upload_code?repo_id=virt&hash=${hash}`, { method: "POST", body: code })
    expect(anonymous.status).toBe(403)
    const noRepo = await upload(member, { repo_id: "never-initialised", hash }, code)
    expect(noRepo.status).toBe(400)
    expect(noRepo.body.detail[0].msg).toContain("repos/init")
    const noHash = await upload(member, { repo_id: "virt" }, code)
    expect(noHash.status).toBe(400)
    expect(noHash.body.detail[0].fields).toEqual([["query", "hash"]])
    const badHash = await upload(member, { repo_id: "virt", hash: "XYZ" }, code)
    expect(badHash.body.detail[0].msg).toContain("\"XYZ\"")
    expect((await upload(member, { hash }, code)).body.detail[0].fields).toEqual([["query", "repo_id"]])
    expect((await call("/api/project/main/repos/list", outsider)).status).toBe(403)
  })

  it("carries a LocalRepo end to end: pack, upload the stream, fetch from the store, materialize", async () => {
    const dir = tempDir()
    writeTree(dir, { ".gitignore": "*.pyc\n", "train.py": "print('hi')\n", "cache.pyc": "x", "lib/util.py": "X = 1\n" })
    const repo = await Effect.runPromise(LocalRepo.fromDir(dir, { repoId: "e2e" }))
    await call("/api/project/main/repos/init", member, { repo_id: repo.repoId, repo_info: { repo_type: "local", repo_dir: dir } })
    const body = Stream.toReadableStream(repo.code.pipe(Stream.orDie))
    const res = await upload(member, { repo_id: repo.repoId, hash: repo.codeHash }, body)
    expect(res).toEqual({ status: 200, body: { repo_id: "e2e", hash: repo.codeHash, size: repo.codeSize, stored: true } })
    const target = path.join(tempDir(), "workflow")
    await runOn(server, Effect.gen(function*() {
      const record = yield* Effect.flatMap(StateStore, (s) => s.codes.get("main", "e2e", repo.codeHash))
      const blobs = yield* BlobStore
      yield* materializeRepo(repo.repoData, blobs.stream(record.blobKey), target)
    }))
    expect(readTree(target)).toEqual({ ".gitignore": "*.pyc\n", "train.py": "print('hi')\n", "lib/util.py": "X = 1\n" })

    const virtual = new VirtualRepo({ repoId: "virt" })
    await Effect.runPromise(virtual.addFile("a.txt", "a"))
    expect((await upload(member, { repo_id: "virt", hash: virtual.codeHash }, Stream.toReadableStream(virtual.code.pipe(Stream.orDie)))).status).toBe(200)
  })

  it("deletes repos with their code records and blobs", async () => {
    expect((await blobKeys()).some((k) => k.startsWith("codes/main/virt/"))).toBe(true)
    expect((await call("/api/project/main/repos/delete", member, { repos_ids: ["virt", "missing"] })).status).toBe(400)
    const del = await call("/api/project/main/repos/delete", member, { repos_ids: ["virt"] })
    expect(del.status).toBe(200)
    expect((await blobKeys()).some((k) => k.startsWith("codes/main/virt/"))).toBe(false)
    expect((await call("/api/project/main/repos/get", member, { repo_id: "virt" })).status).toBe(400)
    const gone = await runOn(server, Effect.flip(Effect.flatMap(StateStore, (s) => s.codes.get("main", "virt", "0".repeat(64)))))
    expect(gone.reason).toBe("NotFound")
  })
})
