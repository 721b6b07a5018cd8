// A small dstack API server for client and CLI tests: real Hono routes mounted with
// core/src/server's mountRoutes, an in-memory Access layer, served on a real loopback port.
import { serve } from "@hono/node-server"
import type { AddressInfo } from "node:net"
import { Effect, Layer, ManagedRuntime, Schema } from "effect"
import { Hono } from "hono"
import { Access } from "../../src/server/Access.ts"
import type { Principal } from "../../src/server/Access.ts"
import type { ProjectRole } from "../../src/domain/Project.ts"
import { notFound } from "../../src/server/ApiError.ts"
import { jsonRoute } from "../../src/server/Route.ts"
import { mountRoutes } from "../../src/server/Router.ts"

export const TOKENS = { admin: "tok-admin", alice: "tok-alice", bob: "tok-bob" } as const

const users: Record<string, Principal> = {
  [TOKENS.admin]: { username: "admin", globalRole: "admin" },
  [TOKENS.alice]: { username: "alice", globalRole: "user" },
  [TOKENS.bob]: { username: "bob", globalRole: "user" }
}
const members: Record<string, Record<string, ProjectRole>> = { main: { alice: "user", admin: "admin" }, research: { alice: "admin" } }

const AccessMemory = Layer.succeed(Access, {
  authenticate: (token) => Effect.succeed(users[token]),
  projectRole: (p, project) =>
    members[project] === undefined ? Effect.fail(notFound(`Project ${project} does not exist`)) : Effect.succeed(members[project][p.username])
})

const UserWire = Schema.Struct({ id: Schema.String, username: Schema.String, global_role: Schema.String, created_at: Schema.String })
const userWire = (p: Principal) => ({ id: `id-${p.username}`, username: p.username, global_role: p.globalRole, created_at: "2026-01-01T00:00:00Z" })
const ProjectWire = Schema.Struct({ project_id: Schema.String, project_name: Schema.String, owner: UserWire, created_at: Schema.String, members: Schema.Array(Schema.Struct({ user: UserWire, project_role: Schema.String })) })
const projectWire = (name: string) => ({
  project_id: `pid-${name}`,
  project_name: name,
  created_at: "2026-01-02T00:00:00Z",
  owner: userWire(users[TOKENS.admin]),
  members: Object.entries(members[name]).map(([username, role]) => ({ user: userWire({ username, globalRole: username === "admin" ? "admin" : "user" }), project_role: role }))
})

/** A request schema with a bounded field, to provoke 400s that carry a `loc`. */
export const EchoRequest = Schema.Struct({
  runName: Schema.propertySignature(Schema.String).pipe(Schema.fromKey("run_name")),
  limit: Schema.optional(Schema.Int.pipe(Schema.between(1, 100)))
})

const routes = [
  jsonRoute({ method: "POST", path: "/api/server/get_info", summary: "info", tag: "server", access: "public", response: Schema.Struct({ server_version: Schema.String }), handler: () => Effect.succeed({ server_version: "0.1.0-test" }) }),
  jsonRoute({ method: "POST", path: "/api/users/get_my_user", summary: "me", tag: "users", access: "user", response: UserWire, handler: (_: void, ctx) => Effect.succeed(userWire(ctx.principal!)) }),
  jsonRoute({
    method: "POST", path: "/api/projects/list", summary: "projects", tag: "projects", access: "user", response: Schema.Array(ProjectWire),
    handler: (_: void, ctx) => Effect.succeed(Object.keys(members).filter((n) => ctx.principal!.globalRole === "admin" || members[n][ctx.principal!.username] !== undefined).map(projectWire))
  }),
  jsonRoute({ method: "POST", path: "/api/projects/:project_name/get", summary: "project", tag: "projects", access: { project: "user" }, response: ProjectWire, handler: (_: void, ctx) => Effect.succeed(projectWire(ctx.projectName!)) }),
  jsonRoute({ method: "POST", path: "/api/project/:project_name/echo", summary: "echo", tag: "test", access: { project: "user" }, request: EchoRequest, response: EchoRequest, handler: (input) => Effect.succeed(input) }),
  jsonRoute({ method: "POST", path: "/api/project/:project_name/admin_only", summary: "admin", tag: "test", access: { project: "admin" }, response: Schema.Struct({}), handler: () => Effect.succeed({}) }),
  // Answers a shape the client does not expect.
  jsonRoute({ method: "POST", path: "/api/test/bad_shape", summary: "bad", tag: "test", access: "public", response: Schema.Struct({ username: Schema.Number }), handler: () => Effect.succeed({ username: 42 }) })
]

export interface TestServer {
  readonly url: string
  /** How many requests reached the server, by path. */
  readonly hits: Record<string, number>
  readonly close: () => Promise<void>
}

/** Starts the test server on a free loopback port. */
export const startTestServer = async (): Promise<TestServer> => {
  const runtime = ManagedRuntime.make(AccessMemory)
  const hits: Record<string, number> = {}
  const app = new Hono()
  app.use("*", async (c, next) => {
    hits[c.req.path] = (hits[c.req.path] ?? 0) + 1
    await next()
  })
  mountRoutes(app, routes, runtime)
  const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
    const s = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, () => resolve(s))
  })
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await runtime.dispose()
    }
  }
}

/** A loopback URL where nothing listens (a port that was just freed). */
export const unreachableUrl = async (): Promise<string> => {
  const { createServer } = await import("node:net")
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve))
  const { port } = s.address() as AddressInfo
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return `http://127.0.0.1:${port}`
}
