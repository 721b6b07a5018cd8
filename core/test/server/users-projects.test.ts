// The server's user and project routes over the real embedded state store.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../src/ports/BlobStore.ts"
import { createServer } from "../../src/server/createServer.ts"
import type { Server } from "../../src/server/createServer.ts"

let server: Server
const ADMIN = "admin-token-for-tests"

const call = async (path: string, token: string | undefined, body?: unknown) => {
  const res = await server.app.request(path, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  return { status: res.status, body: (await res.json()) as any }
}

beforeAll(async () => {
  server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN })
}, 60_000)
afterAll(() => server?.close())

describe("server: users and projects", () => {
  it("bootstraps an admin and the main project", async () => {
    expect(server.bootstrap.createdAdmin).toBe(true)
    expect(server.bootstrap.adminToken).toBe(ADMIN)
    const me = await call("/api/users/get_my_user", ADMIN)
    expect(me.status).toBe(200)
    expect(me.body).toMatchObject({ username: "admin", global_role: "admin" })
    const projects = await call("/api/projects/list", ADMIN)
    expect(projects.body.map((p: any) => p.project_name)).toEqual(["main"])
  })

  it("answers server info without a token and 403 on the rest", async () => {
    expect((await call("/api/server/get_info", undefined)).body.server_version).toMatch(/^\d+\.\d+\.\d+/)
    const res = await server.app.request("/healthcheck")
    expect(await res.json()).toEqual({ status: "running" })
    expect((await call("/api/users/list", undefined)).status).toBe(403)
    expect((await call("/api/users/list", "wrong")).status).toBe(403)
  })

  it("creates users with a token shown once, enforces roles, and refreshes tokens", async () => {
    const created = await call("/api/users/create", ADMIN, { username: "alice", global_role: "user" })
    expect(created.status).toBe(200)
    const aliceToken = created.body.creds.token as string
    expect(aliceToken.length).toBeGreaterThan(20)
    expect((await call("/api/users/get_my_user", aliceToken)).body.username).toBe("alice")
    expect((await call("/api/users/create", aliceToken, { username: "eve", global_role: "admin" })).status).toBe(403)
    const dup = await call("/api/users/create", ADMIN, { username: "alice", global_role: "user" })
    expect(dup.status).toBe(400)
    expect(dup.body.detail[0]).toMatchObject({ code: "resource_exists" })
    const bad = await call("/api/users/create", ADMIN, { username: "-bad name", global_role: "root" })
    expect(bad.status).toBe(422)
    expect(bad.body.detail.map((d: any) => d.loc.join("."))).toEqual(expect.arrayContaining(["body.username", "body.global_role"]))
    const refreshed = await call("/api/users/refresh_token", aliceToken, { username: "alice" })
    expect(refreshed.status).toBe(200)
    expect((await call("/api/users/get_my_user", aliceToken)).status).toBe(403)
    expect((await call("/api/users/get_my_user", refreshed.body.creds.token)).status).toBe(200)
  })

  it("keeps projects private to members: 403 for others, 400 resource_not_exists for missing ones", async () => {
    const bob = (await call("/api/users/create", ADMIN, { username: "bob", global_role: "user" })).body.creds.token
    const carol = (await call("/api/users/create", ADMIN, { username: "carol", global_role: "user" })).body.creds.token
    const created = await call("/api/projects/create", bob, { project_name: "research" })
    expect(created.status).toBe(200)
    expect(created.body.owner.username).toBe("bob")
    expect((await call("/api/projects/research/get", carol)).status).toBe(403)
    expect((await call("/api/projects/nothing-here/get", carol)).status).toBe(400)
    expect((await call("/api/projects/research/get", ADMIN)).status).toBe(200)
    const added = await call("/api/projects/research/add_members", bob, { members: [{ username: "carol", project_role: "user" }] })
    expect(added.status).toBe(200)
    expect((await call("/api/projects/research/get", carol)).status).toBe(200)
    // a plain member cannot manage members; a manager cannot grant admin
    expect((await call("/api/projects/research/add_members", carol, { members: [{ username: "carol", project_role: "admin" }] })).status).toBe(403)
    await call("/api/projects/research/add_members", bob, { members: [{ username: "carol", project_role: "manager" }] })
    const grant = await call("/api/projects/research/add_members", carol, { members: [{ username: "carol", project_role: "admin" }] })
    expect(grant.status).toBe(403)
    expect(grant.body.detail[0].msg).toContain("admin role")
    expect((await call("/api/projects/list", carol)).body.map((p: any) => p.project_name)).toEqual(["research"])
    expect((await call("/api/projects/delete", carol, { projects_names: ["research"] })).status).toBe(403)
    expect((await call("/api/projects/delete", bob, { projects_names: ["research"] })).status).toBe(200)
    expect((await call("/api/projects/research/get", bob)).status).toBe(400)
  })

  it("serves the OpenAPI document generated from the route schemas", async () => {
    const res = await server.app.request("/api/docs")
    const doc = (await res.json()) as any
    expect(doc.openapi).toBe("3.1.0")
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(["/api/users/create", "/api/projects/{project_name}/get"]))
    expect(JSON.stringify(doc.paths["/api/users/create"].post.requestBody)).toContain("global_role")
  })

  it("answers browsers' cross-origin preflights and calls on the API", async () => {
    const preflight = await server.app.request("/api/users/get_my_user", {
      method: "OPTIONS",
      headers: { origin: "http://notebook.example", "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" }
    })
    expect(preflight.status).toBe(204)
    expect(preflight.headers.get("access-control-allow-origin")).toBe("*")
    expect(preflight.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization")
    const res = await server.app.request("/api/users/get_my_user", { method: "POST", headers: { origin: "http://notebook.example", authorization: `Bearer ${ADMIN}` } })
    expect(res.status).toBe(200)
    expect(res.headers.get("access-control-allow-origin")).toBe("*")
  })

  it("answers 404 in the upstream error shape for unknown routes", async () => {
    const res = await call("/api/nothing", ADMIN)
    expect(res.status).toBe(404)
    expect(res.body.detail[0].code).toBe("resource_not_exists")
  })
})
