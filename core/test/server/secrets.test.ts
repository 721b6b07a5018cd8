// The secrets API (/api/project/{p}/secrets/*) on a real server with the embedded store on
// disk: upstream's routes and shapes, who may manage secrets, values encrypted at rest with the
// server key (a key file made 0600 on first start, kept beside the database, not in it), names
// only in lists, and no value in any error.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../src/ports/BlobStore.ts"
import { StateStore } from "../../src/ports/StateStore.ts"
import { createServer, runOn } from "../../src/server/createServer.ts"
import type { Server, ServerOptions } from "../../src/server/createServer.ts"

const ADMIN = "admin-token-for-secret-tests"
const CANARY = "canary-7f3a9c1e-secret-value"
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-secrets-"))
const keyFile = path.join(dir, "secrets.key")
const dataDir = path.join(dir, "data")

const start = (extra: Partial<ServerOptions> = {}) =>
  createServer({ state: EmbeddedStateStore.layer({ dataDir }), blobs: blobsMemory, adminToken: ADMIN, secrets: { keyFile }, ...extra })

let server: Server
const tokens: Record<string, string> = {}

const post = async (s: Server, route: string, token: string | undefined, body?: unknown) => {
  const res = await s.app.request(route, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await res.text()
  return { status: res.status, text, body: text === "" ? undefined : JSON.parse(text) }
}
const call = (route: string, token: string | undefined, body?: unknown) => post(server, route, token, body)

beforeAll(async () => {
  server = await start()
  for (const [name, role] of [["padmin", "admin"], ["pmanager", "manager"], ["puser", "user"], ["outsider", undefined]] as const) {
    const created = await call("/api/users/create", ADMIN, { username: name, global_role: "user" })
    expect(created.status).toBe(200)
    tokens[name] = created.body.creds.token
    if (role !== undefined) {
      expect((await call("/api/projects/main/add_members", ADMIN, { members: [{ username: name, project_role: role }] })).status).toBe(200)
    }
  }
}, 120_000)
afterAll(async () => {
  await server?.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

describe("secrets API", () => {
  it("creates, reads, lists (names only), updates and deletes, in upstream's shapes", async () => {
    const created = await call("/api/project/main/secrets/create_or_update", ADMIN, { name: "HF_TOKEN", value: CANARY })
    expect(created.status).toBe(200)
    expect(created.body).toEqual({ id: expect.stringMatching(/^[0-9a-f-]{36}$/), name: "HF_TOKEN", value: CANARY })
    await call("/api/project/main/secrets/create_or_update", ADMIN, { name: "wandb-key_2", value: "w" })

    const listed = await call("/api/project/main/secrets/list", ADMIN)
    expect(listed.status).toBe(200)
    expect(listed.body).toEqual([
      { id: expect.any(String), name: "wandb-key_2", value: null },
      { id: created.body.id, name: "HF_TOKEN", value: null }
    ])
    expect(listed.text).not.toContain(CANARY)

    expect((await call("/api/project/main/secrets/get", ADMIN, { name: "HF_TOKEN" })).body).toEqual({ id: created.body.id, name: "HF_TOKEN", value: CANARY })
    const updated = await call("/api/project/main/secrets/create_or_update", ADMIN, { name: "HF_TOKEN", value: `${CANARY}-2` })
    expect(updated.body).toEqual({ id: created.body.id, name: "HF_TOKEN", value: `${CANARY}-2` })

    const missing = await call("/api/project/main/secrets/get", ADMIN, { name: "NOPE" })
    expect(missing.status).toBe(400)
    expect(missing.body.detail[0].code).toBe("resource_not_exists")

    // All or none: a missing name deletes nothing and is named.
    const partly = await call("/api/project/main/secrets/delete", ADMIN, { secrets_names: ["wandb-key_2", "NOPE"] })
    expect(partly.status).toBe(400)
    expect(partly.body.detail[0].msg).toContain("NOPE")
    expect((await call("/api/project/main/secrets/list", ADMIN)).body).toHaveLength(2)
    const deleted = await call("/api/project/main/secrets/delete", ADMIN, { secrets_names: ["wandb-key_2"] })
    expect(deleted.status).toBe(200)
    expect(deleted.body).toBeNull()
    expect((await call("/api/project/main/secrets/list", ADMIN)).body.map((s: any) => s.name)).toEqual(["HF_TOKEN"])
  })

  it("refuses bad names and over-long values as upstream does, without quoting the value", async () => {
    const badName = await call("/api/project/main/secrets/create_or_update", ADMIN, { name: "has space", value: CANARY })
    expect(badName.status).toBe(400)
    expect(badName.body.detail[0]).toMatchObject({ msg: "Secret name should match regex '^[A-Za-z0-9-_]{1,200}$'", fields: [["body", "name"]] })
    const long = `${CANARY}${"x".repeat(5000)}`
    const tooLong = await call("/api/project/main/secrets/create_or_update", ADMIN, { name: "LONG", value: long })
    expect(tooLong.status).toBe(400)
    expect(tooLong.body.detail[0]).toMatchObject({ msg: "Secret value length must not exceed 5000", fields: [["body", "value"]] })
    expect(tooLong.text).not.toContain(CANARY)
    const wrongType = await call("/api/project/main/secrets/create_or_update", ADMIN, { name: "X" })
    expect(wrongType.status).toBe(422)
  })

  it("lets global and project admins manage secrets; managers, users, outsiders and bad tokens get 403 (upstream's status for both)", async () => {
    const routes: ReadonlyArray<readonly [string, unknown]> = [
      ["list", undefined],
      ["get", { name: "HF_TOKEN" }],
      ["create_or_update", { name: "ROLE_TEST", value: "v" }],
      ["delete", { secrets_names: ["ROLE_TEST"] }]
    ]
    for (const [route, body] of routes) {
      expect((await call(`/api/project/main/secrets/${route}`, tokens.padmin, body)).status, `padmin ${route}`).toBe(200)
      for (const who of ["pmanager", "puser", "outsider"]) {
        const res = await call(`/api/project/main/secrets/${route}`, tokens[who], body)
        expect(res.status, `${who} ${route}`).toBe(403)
        expect(res.text).not.toContain(CANARY)
      }
      expect((await call(`/api/project/main/secrets/${route}`, "not-a-token", body)).status).toBe(403)
      expect((await call(`/api/project/main/secrets/${route}`, undefined, body)).status).toBe(403)
      expect((await call(`/api/project/nowhere/secrets/${route}`, ADMIN, body)).status).toBe(400)
    }
    const manager = await call("/api/project/main/secrets/get", tokens.pmanager, { name: "HF_TOKEN" })
    expect(manager.body.detail[0].msg).toContain("needs the project role admin")
  })

  it("keeps only ciphertext in the database, bound to its project and name", async () => {
    const record = await runOn(server, Effect.flatMap(StateStore, (s) => s.secrets.get("main", "HF_TOKEN")))
    expect(record.value).toMatch(/^v1:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/)
    expect(record.value).not.toContain(CANARY)
    expect(Buffer.from(record.value.split(":")[2]!, "base64").toString("latin1")).not.toContain(CANARY)
    // The same ciphertext under another name does not decrypt (additional data binds it).
    await runOn(server, Effect.flatMap(StateStore, (s) => s.secrets.upsert({ id: crypto.randomUUID(), project: "main", name: "MOVED", value: record.value })))
    const moved = await call("/api/project/main/secrets/get", ADMIN, { name: "MOVED" })
    expect(moved.status).toBe(500)
    expect(moved.body.detail[0].msg).toBe("the stored secret MOVED of project main does not decrypt with this server's key (was the key changed?)")
    await call("/api/project/main/secrets/delete", ADMIN, { secrets_names: ["MOVED"] })
  })

  it("makes the key file once with mode 0600, and reads the secrets after a restart with it; another key cannot", async () => {
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600)
    const key = fs.readFileSync(keyFile, "utf8")
    expect(Buffer.from(key.trim(), "base64")).toHaveLength(32)
    await server.close()
    server = await start()
    expect(fs.readFileSync(keyFile, "utf8")).toBe(key)
    expect((await call("/api/project/main/secrets/get", ADMIN, { name: "HF_TOKEN" })).body.value).toBe(`${CANARY}-2`)
    await server.close()

    const other = await start({ secrets: { key: Buffer.alloc(32, 7).toString("base64") } })
    try {
      const res = await post(other, "/api/project/main/secrets/get", ADMIN, { name: "HF_TOKEN" })
      expect(res.status).toBe(500)
      expect(res.text).not.toContain(CANARY)
    } finally {
      await other.close()
    }
    server = await start()
  }, 120_000)

  it("refuses a key file others may read, and a key that is not 32 bytes", async () => {
    const loose = path.join(dir, "loose.key")
    fs.writeFileSync(loose, `${Buffer.alloc(32, 1).toString("base64")}\n`, { mode: 0o644 })
    fs.chmodSync(loose, 0o644)
    await expect(createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, secrets: { keyFile: loose } })).rejects.toThrow(/may be read by others \(mode 644\)/)
    await expect(createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, secrets: { key: "c2hvcnQ=" } })).rejects.toThrow(/is not 32 bytes in base64/)
  }, 120_000)

  it("without a key, secrets are refused with 503 saying how to give one; with allowManagers, managers may manage them", async () => {
    const saved = process.env.DSTACK_SERVER_SECRETS_KEY
    delete process.env.DSTACK_SERVER_SECRETS_KEY
    const bare = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN })
    try {
      const res = await post(bare, "/api/project/main/secrets/create_or_update", ADMIN, { name: "A", value: "v" })
      expect(res.status).toBe(503)
      expect(res.body.detail[0].msg).toContain("this server has no secrets key")
    } finally {
      await bare.close()
      if (saved !== undefined) process.env.DSTACK_SERVER_SECRETS_KEY = saved
    }
    const lenient = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN, secrets: { key: new Uint8Array(32), allowManagers: true } })
    try {
      const user = await post(lenient, "/api/users/create", ADMIN, { username: "m", global_role: "user" })
      await post(lenient, "/api/projects/main/add_members", ADMIN, { members: [{ username: "m", project_role: "manager" }] })
      expect((await post(lenient, "/api/project/main/secrets/create_or_update", user.body.creds.token, { name: "A", value: "v" })).status).toBe(200)
    } finally {
      await lenient.close()
    }
  }, 120_000)
})
