// A small dstack API server for client and CLI tests: real Hono routes mounted with
// core/src/server's mountRoutes, an in-memory Access layer, served on a real loopback port.
import { serve } from "@hono/node-server"
import type { AddressInfo } from "node:net"
import { Effect, Layer, ManagedRuntime, Schema } from "effect"
import { Hono } from "hono"
import { Access } from "../../core/src/server/Access.ts"
import type { Principal } from "../../core/src/server/Access.ts"
import type { ProjectRole } from "../../core/src/domain/Project.ts"
import { notFound } from "../../core/src/server/ApiError.ts"
import { jsonRoute, rawRoute } from "../../core/src/server/Route.ts"
import * as Api from "../../core/src/api/runs.ts"
import { Run as RunEntity } from "../../core/src/domain/Run.ts"
import { mountRoutes } from "../../core/src/server/Router.ts"

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
    members[project] === undefined ? Effect.fail(notFound(`Project ${project} does not exist`)) : Effect.succeed(members[project][p.username]),
  sshPublicKey: () => Effect.die("no route here reads an SSH key")
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

/** A run in its wire form, as the runs routes answer it. */
export const runWire = (name: string, status: string) => ({
  id: `id-${name}`,
  project_name: "main",
  user: "alice",
  submitted_at: "2026-01-01T00:00:00.000Z",
  last_processed_at: "2026-01-01T00:00:01.000Z",
  status,
  run_spec: { run_name: name, repo_id: "virtual", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["echo hi"] } },
  jobs: []
})

/** What the fake runs routes hold and what they were asked. */
export const fakeRuns = {
  runs: new Map<string, string>([["done-run", "done"], ["live-run", "running"]]),
  log: ["line 0\n", "line 1\n", "line 2\n"],
  stopped: [] as Array<{ names: ReadonlyArray<string>; abort: boolean }>,
  deleted: [] as Array<ReadonlyArray<string>>,
  plans: [] as Array<unknown>,
  /** Repos registered with repos/init and code blobs received by upload_code (hash → bytes). */
  repos: [] as Array<unknown>,
  uploads: new Map<string, number>()
}

const decodeRun = Schema.decodeUnknownSync(RunEntity)
const runOr404 = (name: string) =>
  fakeRuns.runs.has(name) ? Effect.succeed(decodeRun(runWire(name, fakeRuns.runs.get(name)!))) : Effect.fail(notFound(`Run ${name} does not exist in project main`))

const repoRoutes = [
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/repos/init", summary: "init", tag: "repos", access: { project: "user" },
    request: Schema.Struct({ repo_id: Schema.String, repo_info: Schema.Unknown, repo_creds: Schema.optional(Schema.Unknown) }), response: Api.Empty,
    handler: (input) => (fakeRuns.repos.push(input), Effect.succeed({}))
  }),
  rawRoute({
    method: "POST", path: "/api/project/:project_name/repos/upload_code", summary: "upload", tag: "repos", access: { project: "user" },
    handler: (ctx) =>
      Effect.promise(async () => {
        const hash = ctx.hono.req.query("hash") ?? ""
        const size = (await ctx.hono.req.arrayBuffer()).byteLength
        fakeRuns.uploads.set(hash, size)
        return ctx.hono.json({ repo_id: ctx.hono.req.query("repo_id"), hash, size, stored: true })
      })
  })
]

const runRoutes = [
  ...repoRoutes,
  jsonRoute({ method: "POST", path: "/api/project/:project_name/runs/get", summary: "get", tag: "runs", access: { project: "user" }, request: Api.GetRunRequest, response: RunEntity, handler: (input) => runOr404(input.runName ?? "") }),
  jsonRoute({
    method: "POST", path: "/api/runs/list", summary: "list", tag: "runs", access: "user", request: Api.ListRunsRequest, response: Api.RunList,
    handler: (input) => Effect.succeed([...fakeRuns.runs].filter(([, st]) => !input.onlyActive || st === "running").map(([n, st]) => decodeRun(runWire(n, st))))
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/runs/get_plan", summary: "plan", tag: "runs", access: { project: "user" }, request: Api.GetPlanRequest, response: Api.RunPlan,
    handler: (input) => {
      fakeRuns.plans.push(Schema.encodeSync(Api.GetPlanRequest)(input))
      return Effect.succeed(Schema.decodeUnknownSync(Api.RunPlan)({ project_name: "main", user: "alice", run_spec: Schema.encodeSync(Api.GetPlanRequest)(input).run_spec, job_plans: [] }))
    }
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/runs/apply", summary: "apply", tag: "runs", access: { project: "user" }, request: Api.ApplyRequest, response: RunEntity,
    handler: (input) => {
      const name = input.plan.runSpec.runName ?? "fresh-run"
      fakeRuns.runs.set(name, "submitted")
      return runOr404(name)
    }
  }),
  jsonRoute({ method: "POST", path: "/api/project/:project_name/runs/stop", summary: "stop", tag: "runs", access: { project: "user" }, request: Api.StopRunsRequest, response: Api.Empty, handler: (input) => (fakeRuns.stopped.push({ names: input.runsNames, abort: input.abort }), Effect.succeed({})) }),
  jsonRoute({ method: "POST", path: "/api/project/:project_name/runs/delete", summary: "delete", tag: "runs", access: { project: "user" }, request: Api.DeleteRunsRequest, response: Api.Empty, handler: (input) => (fakeRuns.deleted.push(input.runsNames), Effect.succeed({})) }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/logs/poll", summary: "poll", tag: "logs", access: { project: "user" }, request: Api.PollLogsRequest, response: Api.JobSubmissionLogs,
    handler: (input) =>
      Effect.flatMap(runOr404(input.runName), () => {
        // Pages of two lines; the token is the index of the next line.
        const from = input.nextToken ? Number(input.nextToken) : 0
        const logs = fakeRuns.log.slice(from, from + 2).map((message, i) => ({ timestamp: new Date(1_000 * (from + i)), logSource: "stdout" as const, message }))
        return Effect.succeed(from + 2 < fakeRuns.log.length ? { logs, nextToken: String(from + 2) } : { logs })
      })
  }),
  rawRoute({
    method: "GET", path: "/api/project/:project_name/logs/stream", summary: "stream", tag: "logs", access: { project: "user" },
    handler: (ctx) =>
      Effect.flatMap(runOr404(ctx.hono.req.query("run_name") ?? ""), () => {
        const events = fakeRuns.log.map((message, i) => ({ timestamp: new Date(1_000 * i).toISOString(), log_source: "stdout", message }))
        // Two `logs` events split across chunks, then `end`.
        const chunks = [`event: logs\ndata: ${JSON.stringify(events.slice(0, 1))}\n\nevent: lo`, `gs\ndata: ${JSON.stringify(events.slice(1))}\n\n`, `event: end\ndata: {"status":"done"}\n\n`]
        const body = new ReadableStream<Uint8Array>({
          start(controller) {
            for (const c of chunks) controller.enqueue(new TextEncoder().encode(c))
            controller.close()
          }
        })
        return Effect.succeed(new Response(body, { headers: { "content-type": "text/event-stream" } }))
      })
  })
]

const routes = [
  ...runRoutes,
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
      // Keep-alive connections would hold close() open (Deno's node:http does not drop idle ones).
      const closing = new Promise<void>((resolve) => server.close(() => resolve()))
      ;(server as { closeAllConnections?: () => void }).closeAllConnections?.()
      await closing
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
