// Each user's SSH key pair through the users routes, as upstream's CLI reads it from get_my_user.
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { utils } from "ssh2"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../src/ports/BlobStore.ts"
import { createServer } from "../../src/server/createServer.ts"
import type { Server } from "../../src/server/createServer.ts"

let server: Server
const ADMIN = "admin-token-for-key-tests"

const call = async (p: string, token: string, body?: unknown) => {
  const res = await server.app.request(p, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  return { status: res.status, body: (await res.json()) as any }
}

/** The public key OpenSSH derives from a private key file, without its comment. */
const derivedPublicKey = (privateKey: string): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "user-key-"))
  try {
    const file = path.join(dir, "id")
    fs.writeFileSync(file, privateKey, { mode: 0o600 })
    return execFileSync("ssh-keygen", ["-y", "-f", file], { encoding: "utf8" }).trim().split(" ").slice(0, 2).join(" ")
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
const withoutComment = (line: string) => line.trim().split(" ").slice(0, 2).join(" ")

beforeAll(async () => {
  server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN })
}, 60_000)
afterAll(() => server?.close())

describe("server: user SSH keys", () => {
  it("get_my_user answers the user's key pair, made once and kept, that OpenSSH and ssh2 read", async () => {
    const alice = (await call("/api/users/create", ADMIN, { username: "alice", global_role: "user" })).body.creds.token as string
    const first = await call("/api/users/get_my_user", alice)
    expect(first.status).toBe(200)
    expect(first.body.ssh_public_key).toMatch(/^ssh-rsa AAAA[0-9A-Za-z+/=]+ alice\n$/)
    expect(first.body.ssh_private_key).toMatch(/^-----BEGIN RSA PRIVATE KEY-----/)
    expect(derivedPublicKey(first.body.ssh_private_key)).toBe(withoutComment(first.body.ssh_public_key))
    const parsed = utils.parseKey(first.body.ssh_private_key)
    expect(parsed instanceof Error ? parsed.message : parsed.type).toBe("ssh-rsa")
    const again = await call("/api/users/get_my_user", alice)
    expect(again.body.ssh_public_key).toBe(first.body.ssh_public_key)
    expect(again.body.ssh_private_key).toBe(first.body.ssh_private_key)
    // Other users' keys are their own; the user list never carries a private key.
    const admin = await call("/api/users/get_my_user", ADMIN)
    expect(admin.body.ssh_public_key).not.toBe(first.body.ssh_public_key)
    const list = await call("/api/users/list", alice)
    expect(JSON.stringify(list.body)).not.toContain("PRIVATE KEY")
    const got = await call("/api/users/get_user", ADMIN, { username: "alice" })
    expect(JSON.stringify(got.body)).not.toContain("PRIVATE KEY")
  })

  it("refresh_ssh_key replaces the pair, for the user themself or an admin only", async () => {
    const bob = (await call("/api/users/create", ADMIN, { username: "bob", global_role: "user" })).body.creds.token as string
    const before = (await call("/api/users/get_my_user", bob)).body
    const refreshed = await call("/api/users/refresh_ssh_key", bob, { username: "bob" })
    expect(refreshed.status).toBe(200)
    expect(refreshed.body.creds.token).toBe(bob)
    expect(refreshed.body.ssh_public_key).not.toBe(before.ssh_public_key)
    expect(derivedPublicKey(refreshed.body.ssh_private_key)).toBe(withoutComment(refreshed.body.ssh_public_key))
    expect((await call("/api/users/get_my_user", bob)).body.ssh_private_key).toBe(refreshed.body.ssh_private_key)

    const other = await call("/api/users/refresh_ssh_key", bob, { username: "alice" })
    expect(other.status).toBe(403)
    expect(other.body.detail[0].msg).toContain("Only admins")
    const missing = await call("/api/users/refresh_ssh_key", ADMIN, { username: "nobody" })
    expect(missing.status).toBe(400)
    expect(missing.body.detail[0].code).toBe("resource_not_exists")
    const byAdmin = await call("/api/users/refresh_ssh_key", ADMIN, { username: "bob" })
    expect(byAdmin.status).toBe(200)
    expect(byAdmin.body.username).toBe("bob")
    expect(byAdmin.body.ssh_public_key).not.toBe(refreshed.body.ssh_public_key)
  })

  it("a run submitted without ssh_key_pub carries the user's public key, as upstream's; one given is kept", async () => {
    const carol = (await call("/api/users/create", ADMIN, { username: "carol", global_role: "user" })).body.creds.token as string
    await call("/api/projects/main/add_members", ADMIN, { members: [{ username: "carol", project_role: "user" }] })
    const spec = (name: string, extra: object = {}) => ({ run_spec: { run_name: name, configuration: { type: "task", commands: ["true"] }, ...extra } })
    const submitted = await call("/api/project/main/runs/submit", carol, spec("keyed-run"))
    expect(submitted.status, JSON.stringify(submitted.body)).toBe(200)
    const me = (await call("/api/users/get_my_user", carol)).body
    expect(submitted.body.run_spec.ssh_key_pub).toBe(me.ssh_public_key)
    const own = await call("/api/project/main/runs/submit", carol, spec("own-key-run", { ssh_key_pub: "ssh-ed25519 AAAAown carol" }))
    expect(own.status, JSON.stringify(own.body)).toBe(200)
    expect(own.body.run_spec.ssh_key_pub).toBe("ssh-ed25519 AAAAown carol")
  })
})
