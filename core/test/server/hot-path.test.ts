// The request path answered from memory: a route's `cached` answer, tried when the caller's
// access is in memory too, must answer exactly as the Effect handler would — and leave every
// error (401, 403, 404, 400) to it. The caches behind runs/get, runs/list and runs/get_plan
// must show every write at once; every answer carries the CORS headers.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Context, Effect, Layer, ManagedRuntime, Schema } from "effect"
import { Hono } from "hono"
import { Access } from "../../src/server/Access.ts"
import type { Principal } from "../../src/server/Access.ts"
import type { ProjectRole } from "../../src/domain/Project.ts"
import { notFound } from "../../src/server/ApiError.ts"
import { encoded, jsonRoute, rawRoute } from "../../src/server/Route.ts"
import { mountRoutes } from "../../src/server/Router.ts"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../src/ports/BlobStore.ts"
import { StateStore } from "../../src/ports/StateStore.ts"
import { createServer, runOn } from "../../src/server/createServer.ts"
import type { Server } from "../../src/server/createServer.ts"
import { InstanceCache } from "../../src/server/InstanceCache.ts"
import * as InstanceCacheModule from "../../src/server/InstanceCache.ts"
import { Run } from "../../src/domain/Run.ts"
import { encodeRecord } from "../../src/engine/RunRecord.ts"
import { makeJob, makeRun } from "../engine/fixtures.ts"

// ---------------------------------------------------------------------------------------------
// The router, with an Access service that keeps what it answered in memory

const users: Record<string, Principal> = {
  "tok-admin": { username: "admin", globalRole: "admin" },
  "tok-alice": { username: "alice", globalRole: "user" },
  "tok-bob": { username: "bob", globalRole: "user" }
}
const members: Record<string, Record<string, ProjectRole>> = { main: { alice: "user", bob: "user" }, other: { bob: "user" } }
const seenTokens = new Set<string>()
const seenProjects = new Set<string>()

const AccessTest = Layer.succeed(Access, {
  authenticate: (token) =>
    Effect.sync(() => {
      if (users[token] !== undefined) seenTokens.add(token)
      return users[token]
    }),
  projectRole: (p, project) =>
    members[project] === undefined
      ? Effect.fail(notFound(`Project ${project} does not exist`))
      : Effect.sync(() => {
          seenProjects.add(project)
          return members[project]![p.username]
        }),
  authenticateCached: (token) => (seenTokens.has(token) ? users[token] : undefined),
  projectRoleCached: (p, project) => (seenProjects.has(project) ? { role: members[project]?.[p.username] } : undefined)
})

class Things extends Context.Tag("test/Things")<Things, { readonly remembered: Map<string, string> }>() {}
const things = { remembered: new Map<string, string>() }

const Thing = Schema.Struct({ name: Schema.String, value: Schema.String })
const GetThing = Schema.Struct({ name: Schema.String.pipe(Schema.minLength(1)) })
let handled = 0
let answeredCached = 0
const routes = [
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/things/get", summary: "thing", tag: "things", access: { project: "user" },
    request: GetThing, response: Thing,
    handler: (input, ctx) =>
      Effect.flatMap(Things, (t) => {
        handled++
        if (input.name === "missing") return Effect.fail(notFound(`No thing ${input.name}`))
        const value = `${ctx.projectName}:${input.name}`
        t.remembered.set(`${ctx.projectName}/${input.name}`, value)
        return Effect.succeed({ name: input.name, value })
      }),
    cached: (input, ctx, services) => {
      const value = Context.get(services, Things).remembered.get(`${ctx.projectName}/${input.name}`)
      if (value === undefined) return undefined
      answeredCached++
      return encoded({ name: input.name, value })
    }
  }),
  rawRoute({
    method: "GET", path: "/api/raw", summary: "raw", tag: "things", access: "public",
    handler: (ctx) => Effect.succeed(ctx.hono.body("raw", 200))
  })
]

const runtime = ManagedRuntime.make(Layer.merge(AccessTest, Layer.succeed(Things, things)))
const app = new Hono()
mountRoutes(app, routes, runtime, { headers: () => ({ "access-control-allow-origin": "*" }) })

const post = (path: string, token: string | undefined, body: unknown) =>
  app.request(path, {
    method: "POST",
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body)
  })

describe("router: answers from memory", () => {
  it("answers from memory once warm, the same bytes and headers as the handler", async () => {
    const first = await post("/api/project/main/things/get", "tok-alice", { name: "a" })
    const firstText = await first.text()
    expect(first.status).toBe(200)
    expect(handled).toBe(1)
    const before = answeredCached
    const second = await post("/api/project/main/things/get", "tok-alice", { name: "a" })
    expect(await second.text()).toBe(firstText)
    expect(answeredCached).toBe(before + 1)
    expect(handled).toBe(1)
    for (const res of [first, second]) {
      expect(res.headers.get("content-type")).toBe("application/json")
      expect(res.headers.get("access-control-allow-origin")).toBe("*")
    }
  })

  it("leaves every error to the handler: 401, 403, 404 and 400 with the field, with the caches warm", async () => {
    await post("/api/project/main/things/get", "tok-bob", { name: "b" })
    await post("/api/project/other/things/get", "tok-bob", { name: "b" })
    const cachedBefore = answeredCached
    expect((await post("/api/project/main/things/get", undefined, { name: "b" })).status).toBe(401)
    expect((await post("/api/project/main/things/get", "tok-nobody", { name: "b" })).status).toBe(401)
    // alice's role in `other` was never asked: the handler answers (and says 403)
    const forbidden = await post("/api/project/other/things/get", "tok-alice", { name: "b" })
    expect(forbidden.status).toBe(403)
    expect(forbidden.headers.get("access-control-allow-origin")).toBe("*")
    // now it is in memory (not a member): still 403, never the remembered thing
    expect((await post("/api/project/other/things/get", "tok-alice", { name: "b" })).status).toBe(403)
    expect((await post("/api/project/nope/things/get", "tok-alice", { name: "b" })).status).toBe(404)
    const bad = await post("/api/project/main/things/get", "tok-bob", { name: "" })
    expect(bad.status).toBe(400)
    expect((await bad.json()).detail[0].loc).toEqual(["body", "name"])
    expect((await post("/api/project/main/things/get", "tok-bob", "{not json")).status).toBe(400)
    expect((await post("/api/project/main/things/get", "tok-bob", { name: "missing" })).status).toBe(404)
    expect(answeredCached).toBe(cachedBefore)
    // and the remembered answer still comes from memory
    expect(await (await post("/api/project/main/things/get", "tok-bob", { name: "b" })).json()).toEqual({ name: "b", value: "main:b" })
    expect(answeredCached).toBe(cachedBefore + 1)
  })

  it("gives raw routes' answers the same headers", async () => {
    const res = await app.request("/api/raw")
    expect(await res.text()).toBe("raw")
    expect(res.headers.get("access-control-allow-origin")).toBe("*")
  })
})

// ---------------------------------------------------------------------------------------------
// The server

const ADMIN = "admin-token-for-hot-path"
let server: Server

const call = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
  const res = await server.app.request(path, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN}`, ...headers },
    body: JSON.stringify(body)
  })
  return { status: res.status, headers: res.headers, body: (await res.json()) as any }
}

const store = <A, E>(f: (s: StateStore["Type"]) => Effect.Effect<A, E>) => runOn(server, Effect.flatMap(StateStore, f) as Effect.Effect<A, E, any>)

const insertRun = (name: string, status: "running" | "done", at: number) => {
  const base = makeRun([makeJob({ status: status === "done" ? "done" : "running", submittedAt: at })], { status })
  const run = new Run({ ...base, id: `id-${name}`, submittedAt: new Date(at), runSpec: new (base.runSpec.constructor as any)({ ...base.runSpec, runName: name }) }, { disableValidation: true })
  return store((s) => s.runs.insert({ id: run.id, project: "main", name, status, userName: run.user, submittedAt: run.submittedAt, doc: encodeRecord({ run, submittedToRunner: [] }) }))
}

const planSpec = (name: string) => ({
  run_spec: { run_name: name, repo_id: "r", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["true"] } }
})

beforeAll(async () => {
  server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN, corsOrigins: ["http://a.example"] })
}, 60_000)
afterAll(() => server?.close())

describe("server: answers from memory", () => {
  it("lists a new run at once though the same page was answered from memory", async () => {
    await insertRun("page-a", "done", Date.parse("2025-01-01T00:00:00Z"))
    let page: any
    for (let i = 0; i < 3; i++) page = await call("/api/runs/list", { project_name: "main" })
    expect(page.body.map((r: any) => r.run_spec.run_name)).toEqual(["page-a"])
    await insertRun("page-b", "done", Date.parse("2025-01-02T00:00:00Z"))
    expect((await call("/api/runs/list", { project_name: "main" })).body.map((r: any) => r.run_spec.run_name)).toEqual(["page-b", "page-a"])
    // the text made from each run's is the same JSON as the runs encoded one by one (the cost
    // of this fixture's job, priced and never finished, grows with the clock)
    const one = await call("/api/project/main/runs/get", { run_name: "page-a" })
    const listed = (await call("/api/runs/list", { project_name: "main" })).body[1]
    expect({ ...listed, cost: 0 }).toEqual({ ...one.body, cost: 0 })
    expect(listed.cost).toBeGreaterThanOrEqual(one.body.cost)
  })

  it("answers a remembered page only to callers who may see it", async () => {
    for (let i = 0; i < 3; i++) expect((await call("/api/runs/list", { project_name: "main" })).status).toBe(200)
    const created = await call("/api/users/create", { username: "outsider", global_role: "user" })
    expect(created.status).toBe(200)
    const token = created.body.creds.token as string
    for (let i = 0; i < 3; i++) {
      const res = await call("/api/runs/list", { project_name: "main" }, { authorization: `Bearer ${token}` })
      expect(res.status).toBe(403)
      expect((await call("/api/runs/list", {}, { authorization: `Bearer ${token}` })).body).toEqual([])
    }
  })

  it("plans an update as soon as a live run takes the name a plan found free", async () => {
    for (let i = 0; i < 3; i++) {
      const plan = await call("/api/project/main/runs/get_plan", planSpec("plan-free"))
      expect(plan.status).toBe(200)
      expect(plan.body.action).toBe("create")
      expect(plan.body.current_resource ?? null).toBeNull()
    }
    await insertRun("plan-free", "running", Date.now())
    const plan = await call("/api/project/main/runs/get_plan", planSpec("plan-free"))
    expect(plan.body.action).toBe("update")
    expect(plan.body.current_resource.id).toBe("id-plan-free")
    // a finished run of that name is no current resource
    await insertRun("plan-done", "done", Date.now())
    expect((await call("/api/project/main/runs/get_plan", planSpec("plan-done"))).body.action).toBe("create")
  })

  it("puts the CORS headers on answers from memory, on errors and on unknown routes", async () => {
    await insertRun("cors-a", "done", Date.parse("2025-01-03T00:00:00Z"))
    for (let i = 0; i < 3; i++) {
      const res = await call("/api/project/main/runs/get", { run_name: "cors-a" }, { origin: "http://a.example" })
      expect(res.status).toBe(200)
      expect(res.headers.get("access-control-allow-origin")).toBe("http://a.example")
      expect(res.headers.get("vary")).toBe("Origin")
    }
    const other = await call("/api/project/main/runs/get", { run_name: "cors-a" }, { origin: "http://b.example" })
    expect(other.headers.get("access-control-allow-origin")).toBeNull()
    expect(other.headers.get("vary")).toBe("Origin")
    const missing = await call("/api/project/main/runs/get", { run_name: "no-such-run" }, { origin: "http://a.example" })
    expect(missing.status).toBe(404)
    expect(missing.headers.get("access-control-allow-origin")).toBe("http://a.example")
    const unknown = await call("/api/nothing", {}, { origin: "http://a.example" })
    expect(unknown.status).toBe(404)
    expect(unknown.headers.get("access-control-allow-origin")).toBe("http://a.example")
  })
})

describe("instance cache", () => {
  it("answers a project's idle instances and shows every change at once", async () => {
    const layer = InstanceCacheModule.layer.pipe(Layer.provideMerge(EmbeddedStateStore.layerMemory()))
    await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const s = yield* StateStore
          const cache = yield* InstanceCache
          const ids = (rows: ReadonlyArray<{ readonly id: string }>) => rows.map((r) => r.id).sort()
          yield* s.projects.create({ name: "p", owner: "admin" }).pipe(Effect.ignore)
          expect(yield* cache.idle("p")).toEqual([])
          yield* s.instances.insert({ id: "i-1", project: "p", name: "i-1", status: "idle", doc: { any: 1 } })
          expect(ids(yield* cache.idle("p"))).toEqual(["i-1"])
          expect(ids(yield* cache.idle("p"))).toEqual(["i-1"])
          yield* s.instances.update("i-1", { status: "busy" })
          expect(ids(yield* cache.idle("p"))).toEqual([])
          yield* s.instances.insert({ id: "i-2", project: "p", name: "i-2", status: "idle", doc: {} })
          yield* s.instances.update("i-1", { status: "idle" })
          expect(ids(yield* cache.idle("p"))).toEqual(["i-1", "i-2"])
        })
      ).pipe(Effect.provide(layer))
    )
  })
})
