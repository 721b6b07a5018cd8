import { describe, expect, it } from "vitest"
import { Effect, Layer, ManagedRuntime, Schema } from "effect"
import { Hono } from "hono"
import { Access } from "../../src/server/Access.ts"
import type { Principal } from "../../src/server/Access.ts"
import type { ProjectRole } from "../../src/domain/Project.ts"
import { notFound } from "../../src/server/ApiError.ts"
import { jsonRoute } from "../../src/server/Route.ts"
import { mountRoutes } from "../../src/server/Router.ts"
import { openApiDocument } from "../../src/server/OpenApi.ts"

const users: Record<string, Principal> = {
  "tok-admin": { username: "admin", globalRole: "admin" },
  "tok-alice": { username: "alice", globalRole: "user" },
  "tok-bob": { username: "bob", globalRole: "user" }
}
const members: Record<string, Record<string, ProjectRole>> = { main: { alice: "user" } }

const AccessTest = Layer.succeed(Access, {
  authenticate: (token) => Effect.succeed(users[token]),
  projectRole: (p, project) =>
    members[project] === undefined ? Effect.fail(notFound(`Project ${project} does not exist`)) : Effect.succeed(members[project][p.username])
,
  sshPublicKey: () => Effect.die("no route here reads an SSH key")
})

const Echo = Schema.Struct({
  runName: Schema.propertySignature(Schema.String).pipe(Schema.fromKey("run_name")),
  limit: Schema.optional(Schema.Int.pipe(Schema.between(1, 100)))
})
const routes = [
  jsonRoute({ method: "GET", path: "/api/ping", summary: "ping", tag: "server", access: "public", response: Schema.Struct({ ok: Schema.Boolean }), handler: () => Effect.succeed({ ok: true }) }),
  jsonRoute({ method: "POST", path: "/api/users/get_my_user", summary: "me", tag: "users", access: "user", response: Schema.Struct({ username: Schema.String }), handler: (_: void, ctx) => Effect.succeed({ username: ctx.principal!.username }) }),
  jsonRoute({ method: "POST", path: "/api/users/list", summary: "list", tag: "users", access: "admin", response: Schema.Array(Schema.String), handler: () => Effect.succeed(Object.values(users).map((u) => u.username)) }),
  jsonRoute({ method: "POST", path: "/api/project/:project_name/runs/get", summary: "echo", tag: "runs", access: { project: "user" }, request: Echo, response: Echo, handler: (input) => Effect.succeed(input) }),
  jsonRoute({ method: "POST", path: "/api/project/:project_name/runs/delete", summary: "delete", tag: "runs", access: { project: "manager" }, response: Schema.Struct({}), handler: () => Effect.succeed({}) })
]

const runtime = ManagedRuntime.make(AccessTest)
const app = new Hono()
mountRoutes(app, routes, runtime)

const post = (path: string, token?: string, body?: unknown) =>
  app.request(path, { method: "POST", headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), "content-type": "application/json" }, body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body) })

describe("router", () => {
  it("serves public routes without a token", async () => {
    const res = await app.request("/api/ping")
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ ok: true })
  })
  it("answers 403 (upstream's status) without a token and with an unknown token", async () => {
    const missing = await post("/api/users/get_my_user")
    expect(missing.status).toBe(403)
    expect((await missing.json()).detail[0].code).toBe("not_authenticated")
    expect((await post("/api/users/get_my_user", "nope")).status).toBe(403)
    expect(await (await post("/api/users/get_my_user", "tok-bob")).json()).toEqual({ username: "bob" })
  })
  it("answers 403 for a non-admin on an admin route", async () => {
    expect((await post("/api/users/list", "tok-alice")).status).toBe(403)
    expect((await post("/api/users/list", "tok-admin")).status).toBe(200)
  })
  it("checks project membership and roles, 400 resource_not_exists for a missing project", async () => {
    const body = { run_name: "r1" }
    expect((await post("/api/project/main/runs/get", "tok-alice", body)).status).toBe(200)
    const notMember = await post("/api/project/main/runs/get", "tok-bob", body)
    expect(notMember.status).toBe(403)
    expect((await notMember.json()).detail[0].msg).toContain("not a member of project main")
    expect((await post("/api/project/main/runs/get", "tok-admin", body)).status).toBe(200)
    expect((await post("/api/project/main/runs/delete", "tok-alice", {})).status).toBe(403)
    expect((await post("/api/project/ghost/runs/get", "tok-alice", body)).status).toBe(400)
  })
  it("maps snake_case bodies and reports every malformed field with its path", async () => {
    const ok = await post("/api/project/main/runs/get", "tok-alice", { run_name: "r1", limit: 5 })
    expect(await ok.json()).toEqual({ run_name: "r1", limit: 5 })
    const bad = await post("/api/project/main/runs/get", "tok-alice", { limit: 500 })
    expect(bad.status).toBe(422)
    const detail = (await bad.json()).detail as Array<{ loc: Array<string>; msg: string }>
    expect(detail.map((d) => d.loc.join("."))).toEqual(expect.arrayContaining(["body.run_name", "body.limit"]))
    const notJson = await post("/api/project/main/runs/get", "tok-alice", "{oops")
    expect(notJson.status).toBe(422)
    expect((await notJson.json()).detail[0].msg).toContain("not valid JSON")
  })
  it("generates an OpenAPI document with snake_case request schemas", () => {
    const doc = openApiDocument(routes, { title: "t", version: "0" }) as any
    const op = doc.paths["/api/project/{project_name}/runs/get"].post
    expect(op.parameters[0].name).toBe("project_name")
    expect(JSON.stringify(op.requestBody)).toContain("run_name")
    expect(doc.paths["/api/ping"].get.security).toEqual([])
  })
})
