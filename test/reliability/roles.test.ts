// Roles on every route: the policy table of docs/security.md against the server's route table
// (every route named, with its declared access), then every route called on a real server
// (embedded state on disk, the local backend running a real job) as a global admin, a project
// admin, manager and user, a non-member, a bad token and no token. A caller the policy admits
// gets past authorization (the probe body is one no route accepts, so nothing is changed: the
// answer is the body's 422, or what the route answers without a body); one it does not admit
// gets upstream's 403 with the right code. Then the handlers' own checks, and what a member of
// one project can reach of another's runs, logs, instances, fleets, secrets, repos and backends.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { makePoolPlugin } from "@dstack-ts/backend-pool"
import type { AnyRoute, RouteAccess } from "../../core/src/server/Route.ts"
import { makeInProcessPlugin } from "../support/inprocess-backend.ts"

const ADMIN = "roles-admin-token"
const CANARY = `canary-${crypto.randomUUID()}`
const root = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-roles-"))

type Caller = "global admin" | "project admin" | "project manager" | "project user" | "non-member" | "bad token" | "no token"
const CALLERS: ReadonlyArray<Caller> = ["global admin", "project admin", "project manager", "project user", "non-member", "bad token", "no token"]

/** The policy's words for who may call a route, as docs/security.md writes them. */
const POLICY_WORDS: Record<string, RouteAccess> = {
  anyone: "public",
  "any user": "user",
  "global admin": "admin",
  "project user": { project: "user" },
  "project manager": { project: "manager" },
  "project admin": { project: "admin" }
}

/** `METHOD path` → who may call it, from the table of docs/security.md. */
const readPolicy = (): Map<string, RouteAccess> => {
  const text = fs.readFileSync(path.resolve("docs/security.md"), "utf8")
  const table = new Map<string, RouteAccess>()
  for (const line of text.split("\n")) {
    const m = /^\| `(GET|POST|PUT|DELETE|PATCH) ([^`]+)` \| ([^|]+?) \|/.exec(line)
    if (!m) continue
    const who = POLICY_WORDS[m[3]!.trim()]
    if (who === undefined) throw new Error(`docs/security.md: unknown caller "${m[3]}" for ${m[1]} ${m[2]}`)
    const key = `${m[1]} ${m[2]}`
    if (table.has(key)) throw new Error(`docs/security.md names ${key} twice`)
    table.set(key, who)
  }
  return table
}

const rank = { user: 0, manager: 1, admin: 2 } as const

/** Whether the policy admits the caller (for project routes, in the project of the path). */
const admits = (access: RouteAccess, caller: Caller): boolean => {
  if (access === "public") return true
  if (caller === "bad token" || caller === "no token") return false
  if (caller === "global admin") return true
  if (access === "user") return true
  if (access === "admin") return false
  if (caller === "non-member") return false
  const role = caller === "project admin" ? "admin" : caller === "project manager" ? "manager" : "user"
  return rank[role] >= rank[access.project]
}

let server: Server
const tokens: Partial<Record<Caller, string>> = { "global admin": ADMIN, "bad token": "not-a-token-anyone-has" }
/** Tokens of users of the second project (`beta`), whose things the callers above must not reach. */
let betaToken = ""

const request = async (method: string, route: string, token: string | undefined, body?: string, headers: Record<string, string> = {}) => {
  const res = await server.app.request(route, {
    method,
    headers: { ...(body !== undefined ? { "content-type": "application/json" } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    ...(body !== undefined && method !== "GET" ? { body } : {})
  })
  const text = await res.text()
  let json: any
  try {
    json = text === "" ? undefined : JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: res.status, text, body: json }
}
const call = (route: string, token: string | undefined, body?: unknown) =>
  request("POST", route, token, body === undefined ? undefined : JSON.stringify(body))

/** A concrete path for a route's pattern: its project is `alpha`. */
const concrete = (pattern: string): string =>
  pattern
    .replace(":project_name", "alpha")
    .replace(":frame_id", "00000000-0000-4000-8000-000000000000")
    .replace(":index", "0")
    .replace(":owner", "nobody")
    .replace(":file", "missing.js")
    .replace(":name", "missing")
    .replace("*", "missing")

const until = async <A>(what: string, read: () => Promise<A>, ok: (a: A) => boolean, timeoutMs = 90_000): Promise<A> => {
  const start = Date.now()
  for (;;) {
    const value = await read()
    if (ok(value)) return value
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not reached in ${timeoutMs} ms; last: ${JSON.stringify(value).slice(0, 500)}`)
    await new Promise((r) => setTimeout(r, 250))
  }
}

/** What the beta project holds: a finished run with a log, its instance, a secret, a repo with credentials. */
const beta = { runId: "", submissionId: "", instanceId: "", fleetId: "", fleetName: "" }

beforeAll(async () => {
  server = await createServer({
    state: EmbeddedStateStore.layer({ dataDir: path.join(root, "data") }),
    blobs: blobsMemory,
    adminToken: ADMIN,
    // The in-process backend takes any configuration: one holding a credential, for backends/list.
    plugins: [backendLocal, transportLocal, makeInProcessPlugin().plugin, makePoolPlugin()],
    compute: { defaultBackends: [{ type: "local", config: { work_dir: path.join(root, "runners") } }] },
    runner: { entry: path.resolve("cli/src/runner.ts") },
    engine: { resyncMs: 1_000 },
    // Managers may manage secrets here, so that the secrets routes admit whom they declare;
    // core/test/server/secrets.test.ts checks the default, where only project admins may.
    secrets: { keyFile: path.join(root, "secrets.key"), allowManagers: true }
  })
  const users: ReadonlyArray<[string, Caller | undefined]> = [["padmin", "project admin"], ["pmanager", "project manager"], ["puser", "project user"], ["outsider", "non-member"], ["betaowner", undefined]]
  for (const [name, caller] of users) {
    const created = await call("/api/users/create", ADMIN, { username: name, global_role: "user" })
    expect(created.status, created.text).toBe(200)
    if (caller !== undefined) tokens[caller] = created.body.creds.token
    else betaToken = created.body.creds.token
  }
  expect((await call("/api/projects/create", ADMIN, { project_name: "alpha" })).status).toBe(200)
  const members = [["padmin", "admin"], ["pmanager", "manager"], ["puser", "user"]].map(([username, project_role]) => ({ username, project_role }))
  expect((await call("/api/projects/alpha/add_members", ADMIN, { members })).status).toBe(200)
  expect((await call("/api/projects/create", betaToken, { project_name: "beta" })).status).toBe(200)

  // beta's things: a secret, a repo with credentials, a backend with a credential, and a run that logs.
  expect((await call("/api/project/beta/secrets/create_or_update", betaToken, { name: "TOKEN", value: CANARY })).status).toBe(200)
  const repo = await call("/api/project/beta/repos/init", betaToken, {
    repo_id: "beta-repo",
    repo_info: { repo_type: "remote", repo_name: "beta-repo", repo_url: "https://git.example/beta.git" },
    repo_creds: { clone_url: "https://git.example/beta.git", private_key: null, oauth_token: CANARY }
  })
  expect(repo.status, repo.text).toBe(200)
  const applied = await call("/api/project/beta/runs/apply", betaToken, {
    plan: {
      run_spec: {
        run_name: "beta-run",
        repo_id: "beta",
        repo_data: { repo_type: "virtual" },
        configuration: { type: "task", commands: [`echo beta-log-line`], resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } }
      }
    },
    force: false
  })
  expect(applied.status, applied.text).toBe(200)
  const run = await until("beta-run done", () => call("/api/project/beta/runs/get", betaToken, { run_name: "beta-run" }), (r) => ["done", "failed", "terminated"].includes(r.body?.status))
  expect(run.body.status, run.text).toBe("done")
  beta.runId = run.body.id
  beta.submissionId = run.body.jobs[0].job_submissions.at(-1).id
  const instances = await call("/api/instances/list", betaToken, {})
  beta.instanceId = instances.body[0]?.id ?? ""
  const fleets = await call("/api/project/beta/fleets/list", betaToken)
  beta.fleetId = fleets.body[0]?.id ?? ""
  beta.fleetName = fleets.body[0]?.name ?? ""
}, 180_000)

afterAll(async () => {
  await server?.close()
  fs.rmSync(root, { recursive: true, force: true })
})

describe("the policy table of docs/security.md", () => {
  it("names every route of the server, with the access the route declares", () => {
    const policy = readPolicy()
    const declared = new Map(server.routes.map((r: AnyRoute<any>) => [`${r.method} ${r.path}`, r.access] as const))
    expect([...policy.keys()].sort()).toEqual([...declared.keys()].sort())
    for (const [key, access] of declared) expect({ route: key, access: policy.get(key) }).toEqual({ route: key, access })
  })
})

describe("every route as every caller", () => {
  // The probe body: valid JSON that no request schema accepts (each is an object).
  const PROBE = "[]"
  for (const caller of CALLERS) {
    it(`${caller}: admitted where the policy says, refused with upstream's 403 elsewhere`, async () => {
      const policy = readPolicy()
      const mismatches: Array<string> = []
      for (const route of server.routes) {
        const access = policy.get(`${route.method} ${route.path}`)!
        const token = tokens[caller]
        const res = await request(route.method, concrete(route.path), token, route.method === "GET" ? undefined : PROBE)
        const where = `${route.method} ${route.path} as ${caller}: ${res.status} ${res.text.slice(0, 200)}`
        if (res.status >= 500) mismatches.push(`server error: ${where}`)
        if (admits(access, caller)) {
          // Admitted: anything but a refusal. Public routes read a token when one is sent (a
          // private stack's owner); a bad one is refused there too.
          const refused = res.status === 401 || (res.status === 403 && ["forbidden", "not_authenticated"].includes(res.body?.detail?.[0]?.code))
          if (refused && !(access === "public" && caller === "bad token")) mismatches.push(`refused, policy admits: ${where}`)
        } else {
          const code = caller === "bad token" || caller === "no token" ? "not_authenticated" : "forbidden"
          if (res.status !== 403 || res.body?.detail?.[0]?.code !== code) mismatches.push(`not refused with 403 ${code}: ${where}`)
        }
      }
      expect(mismatches).toEqual([])
    }, 120_000)
  }

  it("a project that does not exist is resource_not_exists to a signed-in caller, after the token is checked", async () => {
    const missing = await call("/api/project/nope/runs/get", tokens["non-member"], { run_name: "x" })
    expect({ status: missing.status, code: missing.body.detail[0].code }).toEqual({ status: 400, code: "resource_not_exists" })
    expect((await call("/api/project/nope/runs/get", "bad", { run_name: "x" })).body.detail[0].code).toBe("not_authenticated")
  })
})

describe("the handlers' own checks", () => {
  it("users: non-admins read and refresh only themselves; admins cannot demote or delete themselves", async () => {
    const user = tokens["project user"]!
    expect((await call("/api/users/get_user", user, { username: "pmanager" })).status).toBe(403)
    expect((await call("/api/users/get_user", user, { username: "puser" })).status).toBe(200)
    expect((await call("/api/users/refresh_token", user, { username: "pmanager" })).status).toBe(403)
    expect((await call("/api/users/update", ADMIN, { username: "admin", global_role: "user" })).status).toBe(400)
    expect((await call("/api/users/delete", ADMIN, { users: ["admin"] })).status).toBe(400)
  })

  it("projects: only a project admin deletes it; only project admins grant the admin role", async () => {
    for (const caller of ["project manager", "project user", "non-member"] as const) {
      const res = await call("/api/projects/delete", tokens[caller], { projects_names: ["alpha"] })
      expect(res.status, `${caller}: ${res.text}`).toBe(403)
    }
    const grant = await call("/api/projects/alpha/add_members", tokens["project manager"], { members: [{ username: "outsider", project_role: "admin" }] })
    expect(grant.status, grant.text).toBe(403)
    expect((await call("/api/projects/alpha/get", tokens["project user"])).status).toBe(200)
  })

  it("secrets: values only to project managers and admins (this server allows managers)", async () => {
    expect((await call("/api/project/alpha/secrets/create_or_update", tokens["project manager"], { name: "ALPHA", value: CANARY })).status).toBe(200)
    const asUser = await call("/api/project/alpha/secrets/get", tokens["project user"], { name: "ALPHA" })
    expect(asUser.status).toBe(403)
    expect(asUser.text).not.toContain(CANARY)
    expect((await call("/api/project/alpha/secrets/list", tokens["project manager"])).text).not.toContain(CANARY)
    expect((await call("/api/project/alpha/secrets/get", tokens["project admin"], { name: "ALPHA" })).body.value).toBe(CANARY)
  })

  it("repos: credentials only for project managers", async () => {
    const init = await call("/api/project/alpha/repos/init", tokens["project user"], {
      repo_id: "alpha-repo",
      repo_info: { repo_type: "remote", repo_name: "alpha-repo", repo_url: "https://git.example/alpha.git" },
      repo_creds: { clone_url: "https://git.example/alpha.git", private_key: null, oauth_token: CANARY }
    })
    expect(init.status, init.text).toBe(200)
    const asUser = await call("/api/project/alpha/repos/get", tokens["project user"], { repo_id: "alpha-repo", include_creds: true })
    expect(asUser.status).toBe(403)
    expect(asUser.text).not.toContain(CANARY)
    const plain = await call("/api/project/alpha/repos/get", tokens["project user"], { repo_id: "alpha-repo", include_creds: false })
    expect(plain.status).toBe(200)
    expect(plain.text).not.toContain(CANARY)
    expect((await call("/api/project/alpha/repos/list", tokens["project user"])).text).not.toContain(CANARY)
    expect((await call("/api/project/alpha/repos/get", tokens["project manager"], { repo_id: "alpha-repo", include_creds: true })).text).toContain(CANARY)
  })

  it("backends: a configuration's credentials only for project admins", async () => {
    const created = await call("/api/project/alpha/backends/create", tokens["project admin"], { type: "inprocess", creds: { type: "access_key", secret_key: CANARY } })
    expect(created.status, created.text).toBe(200)
    for (const caller of ["project user", "project manager"] as const) {
      const listed = await call("/api/project/alpha/backends/list", tokens[caller])
      expect(listed.status).toBe(200)
      expect(listed.text, caller).not.toContain(CANARY)
    }
    expect((await call("/api/project/alpha/backends/list", tokens["project admin"])).text).toContain(CANARY)
  })
})

describe("another project's things are unreachable", () => {
  const member = () => tokens["project user"]!

  it("beta's project routes refuse alpha's members and non-members alike", async () => {
    const routes: ReadonlyArray<[string, unknown]> = [
      ["/api/project/beta/runs/get", { run_name: "beta-run" }],
      ["/api/project/beta/logs/poll", { run_name: "beta-run" }],
      ["/api/project/beta/instances/get", { id: beta.instanceId }],
      ["/api/project/beta/fleets/list", undefined],
      ["/api/project/beta/secrets/list", undefined],
      ["/api/project/beta/secrets/get", { name: "TOKEN" }],
      ["/api/project/beta/repos/get", { repo_id: "beta-repo", include_creds: true }],
      ["/api/project/beta/backends/list", undefined],
      ["/api/projects/beta/get", undefined]
    ]
    for (const caller of ["project admin", "project manager", "project user", "non-member"] as const) {
      for (const [route, body] of routes) {
        const res = await call(route, tokens[caller], body)
        expect({ caller, route, status: res.status }).toEqual({ caller, route, status: 403 })
        expect(res.text).not.toContain(CANARY)
        expect(res.text).not.toContain("beta-log-line")
      }
    }
    const stream = await request("GET", "/api/project/beta/logs/stream?run_name=beta-run", member())
    expect(stream.status).toBe(403)
  })

  it("beta's ids through alpha's routes are not found", async () => {
    expect(beta.instanceId).not.toBe("")
    const byId: ReadonlyArray<[string, unknown]> = [
      ["/api/project/alpha/runs/get", { id: beta.runId }],
      ["/api/project/alpha/instances/get", { id: beta.instanceId }],
      ...(beta.fleetId !== "" ? [["/api/project/alpha/fleets/get", { id: beta.fleetId }] as [string, unknown]] : []),
      ["/api/project/alpha/logs/poll", { run_name: "beta-run", job_submission_id: beta.submissionId }],
      ["/api/project/alpha/runs/stop", { runs_names: ["beta-run"], abort: true }],
      ["/api/project/alpha/runs/delete", { runs_names: ["beta-run"] }],
      ["/api/project/alpha/secrets/get", { name: "TOKEN" }],
      ["/api/project/alpha/repos/get", { repo_id: "beta-repo", include_creds: true }]
    ]
    for (const [route, body] of byId) {
      const res = await call(route, route.includes("/secrets/") ? tokens["project admin"] : member(), body)
      expect({ route, status: res.status, code: res.body?.detail?.[0]?.code }).toEqual({ route, status: 400, code: "resource_not_exists" })
      expect(res.text).not.toContain(CANARY)
    }
    // The run is still there for its own project.
    expect((await call("/api/project/beta/runs/get", betaToken, { id: beta.runId })).body.status).toBe("done")
  })

  it("the global lists hold only the caller's projects", async () => {
    for (const caller of ["project admin", "project user", "non-member"] as const) {
      const token = tokens[caller]
      const runs = await call("/api/runs/list", token, {})
      expect(runs.status).toBe(200)
      expect(runs.body.map((r: any) => r.project_name)).not.toContain("beta")
      expect((await call("/api/runs/list", token, { project_name: "beta" })).status).toBe(403)
      const instances = await call("/api/instances/list", token, {})
      expect(instances.body.map((i: any) => i.project_name)).not.toContain("beta")
      const fleets = await call("/api/fleets/list", token, {})
      expect(fleets.body.map((f: any) => f.project_name)).not.toContain("beta")
      const projects = await call("/api/projects/list", token)
      expect(projects.body.map((p: any) => p.project_name)).not.toContain("beta")
    }
    // And the admin sees beta in each: the lists are not empty by accident.
    expect((await call("/api/runs/list", ADMIN, {})).body.map((r: any) => r.project_name)).toContain("beta")
    expect((await call("/api/instances/list", ADMIN, {})).body.map((i: any) => i.project_name)).toContain("beta")
  })

  it("a private stack is readable by its owner and global admins only, through every read route", async () => {
    const created = await call("/api/stacks/frames/create", betaToken, {
      stack: "betaowner/private/notes",
      access: "private",
      attachments: [{ content_type: "text/plain; charset=utf-8", application: "text" }]
    })
    expect(created.status, created.text).toBe(200)
    const frame = created.body.frame_id
    // Another user cannot write into the frame.
    const foreign = await request("PUT", `/api/stacks/frames/${frame}/attachments/0`, member(), "x")
    expect(foreign.status).toBe(403)
    expect((await request("PUT", `/api/stacks/frames/${frame}/attachments/0`, betaToken, CANARY)).status).toBe(200)
    expect((await call("/api/stacks/frames/commit", betaToken, { frame_id: frame })).status).toBe(200)
    const stack = "betaowner/private/notes"
    const reads = (token: string | undefined) => [
      call("/api/stacks/get", token, { stack }),
      call("/api/stacks/pull", token, { stack }),
      request("GET", `/api/stacks/attachment?stack=${stack}&frame_id=${frame}`, token),
      request("GET", `/api/stacks/table?stack=${stack}&frame_id=${frame}`, token),
      request("GET", `/stacks/${stack}`, token),
      call("/api/stacks/update", token, { stack, access: "public" }),
      call("/api/stacks/delete", token, { stack })
    ]
    for (const [who, token] of [["project user", member()], ["non-member", tokens["non-member"]], ["no token", undefined], ["bad token", "not-a-token"]] as const) {
      for (const res of await Promise.all(reads(token))) {
        expect({ who, status: [401, 403].includes(res.status) }).toEqual({ who, status: true })
        expect(res.text).not.toContain(CANARY)
      }
      if (token !== undefined && token !== "not-a-token") {
        const listed = await call("/api/stacks/list", token)
        expect(listed.text).not.toContain("private/notes")
      }
    }
    expect((await call("/api/stacks/list", undefined)).text).not.toContain("private/notes")
    const owner = await request("GET", `/api/stacks/attachment?stack=${stack}&frame_id=${frame}`, betaToken)
    expect(owner.text).toBe(CANARY)
    expect((await request("GET", `/api/stacks/attachment?stack=${stack}&frame_id=${frame}`, ADMIN)).text).toBe(CANARY)
  })
})
