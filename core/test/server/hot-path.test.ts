// One path per request: every route has one Effect handler and every request one
// authorization. When the caches behind them (the caller, their project role, a run) hold all a
// request needs, the router completes that same handler synchronously; when anything must be
// read, the same Effect waits for it. Either way every error (401, 403, 404, 400) is the one the
// handler and the authorization say, and a remembered answer never reaches a caller who may not
// see it. The caches behind runs/get, runs/list and runs/get_plan show every write at once;
// every answer carries the CORS headers.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Context, Effect, Layer, ManagedRuntime, Schema } from "effect"
import { Hono } from "hono"
import { Access } from "../../src/server/Access.ts"
import type { Principal } from "../../src/server/Access.ts"
import type { ProjectRole } from "../../src/domain/Project.ts"
import { notFound } from "../../src/server/ApiError.ts"
import { jsonRoute, rawRoute } from "../../src/server/Route.ts"
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
// The router, with an Access service that remembers what it read: a remembered answer is an
// Effect already resolved, anything else a read that takes a turn of the event loop.

const users: Record<string, Principal> = {
  "tok-admin": { username: "admin", globalRole: "admin" },
  "tok-alice": { username: "alice", globalRole: "user" },
  "tok-bob": { username: "bob", globalRole: "user" }
}
const members: Record<string, Record<string, ProjectRole>> = { main: { alice: "user", bob: "user" }, other: { bob: "user" } }
const seenTokens = new Set<string>()
const seenProjects = new Set<string>()
let reads = 0

/** A store read: answers on a later turn of the event loop. */
const read = <A>(f: () => A): Effect.Effect<A> =>
  Effect.promise(() => new Promise<A>((resolve) => setTimeout(() => resolve(f()), 1))).pipe(Effect.tap(() => void reads++))

const AccessTest = Layer.succeed(Access, {
  authenticate: (token) =>
    seenTokens.has(token)
      ? Effect.succeed(users[token])
      : read(() => {
          if (users[token] !== undefined) seenTokens.add(token)
          return users[token]
        }),
  projectRole: (p, project) =>
    seenProjects.has(project)
      ? Effect.succeed(members[project]![p.username])
      : members[project] === undefined
      ? Effect.fail(notFound(`Project ${project} does not exist`))
      : read(() => {
          seenProjects.add(project)
          return members[project]![p.username]
        })
,
  sshPublicKey: () => Effect.die("no route here reads an SSH key")
})

class Things extends Context.Tag("test/Things")<Things, { readonly remembered: Map<string, string> }>() {}
const things = { remembered: new Map<string, string>() }

const Thing = Schema.Struct({ name: Schema.String, value: Schema.String })
const GetThing = Schema.Struct({ name: Schema.String.pipe(Schema.minLength(1)) })
let handled = 0
let fromMemory = 0
const routes = [
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/things/get", summary: "thing", tag: "things", access: { project: "user" },
    request: GetThing, response: Thing, rememberInputs: true,
    // The one handler: from its memory when it can, else a read it then remembers.
    handler: (input, ctx) =>
      Effect.flatMap(Things, (t) => {
        handled++
        if (input.name === "missing") return Effect.fail(notFound(`No thing ${input.name}`))
        const key = `${ctx.projectName}/${input.name}`
        const known = t.remembered.get(key)
        if (known !== undefined) {
          fromMemory++
          return Effect.succeed({ name: input.name, value: known })
        }
        return read(() => {
          const value = `${ctx.projectName}:${input.name}`
          t.remembered.set(key, value)
          return { name: input.name, value }
        })
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/me", summary: "me", tag: "things", access: "user",
    response: Schema.Struct({ username: Schema.String }),
    handler: (_: void, ctx) => Effect.succeed({ username: ctx.principal!.username })
  }),
  jsonRoute({
    method: "POST", path: "/api/broken", summary: "a defect", tag: "things", access: "public",
    response: Schema.Struct({}),
    handler: () => Effect.die(new Error("boom"))
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

describe("router: one handler, answered synchronously when everything is in memory", () => {
  it("completes a request whose every step is remembered in the same call, and waits otherwise", async () => {
    const me = () => app.fetch(new Request("http://test/api/me", { method: "POST", headers: { authorization: "Bearer tok-admin" } }))
    const first = me()
    // The caller is read first: the answer comes later.
    expect(first).toBeInstanceOf(Promise)
    expect(await (await first).json()).toEqual({ username: "admin" })
    // Now remembered: the same handler answers before `fetch` returns.
    const second = me()
    expect(second).toBeInstanceOf(Response)
    expect(await (second as Response).json()).toEqual({ username: "admin" })
  })

  it("answers from the handler's memory once warm, the same bytes and headers", async () => {
    const readsBefore = reads
    const first = await post("/api/project/main/things/get", "tok-alice", { name: "a" })
    const firstText = await first.text()
    expect(first.status).toBe(200)
    // the caller, the role and the thing were read
    expect(reads - readsBefore).toBe(3)
    const second = await post("/api/project/main/things/get", "tok-alice", { name: "a" })
    expect(await second.text()).toBe(firstText)
    expect(reads - readsBefore).toBe(3)
    expect(fromMemory).toBe(1)
    expect(handled).toBe(2)
    for (const res of [first, second]) {
      expect(res.headers.get("content-type")).toBe("application/json")
      expect(res.headers.get("access-control-allow-origin")).toBe("*")
    }
  })

  it("says every error the same with the caches warm: 403 for a token, 403 for a role, 400 for what is missing and 422 with the field", async () => {
    await post("/api/project/main/things/get", "tok-bob", { name: "b" })
    await post("/api/project/other/things/get", "tok-bob", { name: "b" })
    await post("/api/project/main/things/get", "tok-alice", { name: "b" })
    const handledBefore = handled
    const memoryBefore = fromMemory
    expect((await post("/api/project/main/things/get", undefined, { name: "b" })).status).toBe(403)
    expect((await post("/api/project/main/things/get", "tok-nobody", { name: "b" })).status).toBe(403)
    // Every role in memory, and `other/b` remembered by the handler: alice, no member of
    // `other`, is refused before the handler runs, every time.
    for (let i = 0; i < 3; i++) {
      const forbidden = await post("/api/project/other/things/get", "tok-alice", { name: "b" })
      expect(forbidden.status).toBe(403)
      expect((await forbidden.json()).detail[0].msg).toBe("You are not a member of project other")
      expect(forbidden.headers.get("access-control-allow-origin")).toBe("*")
    }
    expect((await post("/api/project/nope/things/get", "tok-alice", { name: "b" })).status).toBe(400)
    const bad = await post("/api/project/main/things/get", "tok-bob", { name: "" })
    expect(bad.status).toBe(422)
    expect((await bad.json()).detail[0].loc).toEqual(["body", "name"])
    expect((await post("/api/project/main/things/get", "tok-bob", "{not json")).status).toBe(422)
    expect(handled).toBe(handledBefore)
    expect((await post("/api/project/main/things/get", "tok-bob", { name: "missing" })).status).toBe(400)
    expect(handled).toBe(handledBefore + 1)
    // and the remembered answer still comes from memory
    expect(await (await post("/api/project/main/things/get", "tok-bob", { name: "b" })).json()).toEqual({ name: "b", value: "main:b" })
    expect(fromMemory).toBe(memoryBefore + 1)
  })

  it("answers a defect with a 500 in the API's error shape, synchronously or not", async () => {
    const res = await app.request("/api/broken", { method: "POST" })
    expect(res.status).toBe(500)
    expect((await res.json()).detail[0]).toEqual({ msg: "Internal server error", code: "server_error" })
    expect(res.headers.get("access-control-allow-origin")).toBe("*")
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
    expect(missing.status).toBe(400)
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
