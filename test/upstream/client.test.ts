// Upstream's own dstack client (0.21.2: the Python SDK and CLI that dstack users have) against a
// dstack-ts server on a real port with the default build's local backend: every answer parses
// with the client's pydantic models (check_models.py), the SDK plans, applies, follows, reads
// logs, stops and deletes a run, the CLI adds the project and runs ps, apply -d, logs, stop and
// offer, lists fleets, manages secrets, is refused fields this server does not carry out,
// attaches through the server's SSH proxy (attached apply streams the logs), and errors reach it
// as the exceptions it expects; dstack-ts's own CLI does the same steps on the same server.
// Needs ../shared/upstream-client.
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, expect, it } from "vitest"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { serve, type Serving } from "../../core/src/server/serve.ts"
import { describeWith } from "../support/components.ts"
import { makeRemoteStandIn } from "../support/remote-standin.ts"
import { runPython, upstreamClientDir, upstreamEnv } from "../support/upstream.ts"
import { CLI } from "../support/cli.ts"

const TOKEN = "upstream-client-token"
const here = path.dirname(fileURLToPath(import.meta.url))
const dir = upstreamClientDir()
const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-upstream-"))
let server: Server
// Served as `dstack server` serves (Deno.serve on Deno): importing @hono/node-server under Deno
// replaces the global Response with its own, which Deno.serve handlers then fail to answer with.
let listener: Serving | undefined
let url = ""
let env: Record<string, string> = {}
/** SSH fleet hosts: a stand-in for the `remote` backend whose hosts are runners on 127.0.0.x. */
const remote = makeRemoteStandIn()

/** A route's answer as upstream's client gets it (it sends X-API-VERSION). */
const call = async (route: string, body: unknown = {}, token = TOKEN, version = "0.21.2") => {
  const res = await fetch(`${url}${route}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}`, "x-api-version": version },
    body: JSON.stringify(body)
  })
  return { status: res.status, body: (await res.json()) as any }
}

const python = (args: ReadonlyArray<string>, input?: string) => runPython(env, args, { home, ...(input !== undefined ? { input } : {}) })
const cli = (...args: ReadonlyArray<string>) => runPython(env, ["-m", "dstack._internal.cli.main", ...args], { home, cwd: home })

/** dstack-ts's own CLI, with the same HOME (and so the same ~/.dstack/config.yml) as upstream's. */
const ownCli = (...args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: home,
      env: { ...process.env, HOME: home, NO_COLOR: "1", COLUMNS: "200" }
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, stdout, stderr }))
    child.stdin.end()
  })

const lines = (stdout: string) =>
  Object.fromEntries(stdout.trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).map((o) => [o.step, o]))

describeWith("upstream-client", dir !== undefined, "no shared/upstream-client beside or above the checkout (set DSTACK_UPSTREAM_CLIENT)", () => {
  beforeAll(async () => {
    env = await upstreamEnv(dir!)
    server = await createServer({
      state: EmbeddedStateStore.layerMemory(),
      blobs: blobsMemory,
      adminToken: TOKEN,
      plugins: [backendLocal, transportLocal, remote.plugin],
      secrets: { key: new Uint8Array(32).fill(7) },
      runner: { entry: fileURLToPath(new URL("../../cli/src/runner.ts", import.meta.url)) },
      compute: { defaultBackends: [{ type: "local" }] },
      // Upstream's CLI attaches through the proxy the runs answers advertise (SSHProxyAttach).
      sshProxy: { port: 0, hostKeyFile: path.join(home, "sshproxy_host_key"), hostname: "127.0.0.1" }
    })
    listener = await serve(server, { port: 0, handleSignals: false })
    url = listener.url
  }, 120_000)

  afterAll(async () => {
    // Closes the server build too.
    if (listener) await listener.close()
    else await server?.close()
    fs.rmSync(home, { recursive: true, force: true })
  })

  it("the SDK plans, applies, follows to done, reads logs, stops and deletes a run", async () => {
    const out = await python([path.join(here, "sdk_flow.py"), url, TOKEN, "main", "up-sdk"])
    expect(out.stderr).not.toMatch(/Traceback/)
    const steps = lines(out.stdout)
    expect(steps.plan).toMatchObject({ run_name: "up-sdk", jobs: 1, action: "create" })
    expect(steps.apply).toMatchObject({ name: "up-sdk" })
    expect(steps.done).toMatchObject({ status: "done" })
    // base64 on the wire, decoded by the client
    expect(steps.logs.text).toContain("hello from upstream\n")
    expect(steps.logs.text).toContain("to stderr\n")
    expect(steps.list.names).toContain("up-sdk")
    expect(steps.stop).toBeDefined()
    expect(steps.deleted).toMatchObject({ ok: true, error: "ResourceNotExistsError" })
  }, 180_000)

  it("every answer parses with the client's models", async () => {
    const plan = await call("/api/project/main/runs/get_plan", {
      run_spec: { run_name: "up-models", repo_id: null, repo_data: null, configuration: { type: "task", commands: ["echo models"], name: null, image: null, resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } } },
      max_offers: null
    })
    expect(plan.status).toBe(200)
    const applied = await call("/api/project/main/runs/apply", { plan: { run_spec: plan.body.run_spec, current_resource: null }, force: false })
    expect(applied.status).toBe(200)
    let run = applied.body
    for (let i = 0; i < 200 && !["done", "failed", "terminated"].includes(run.status); i++) {
      await new Promise((r) => setTimeout(r, 250))
      run = (await call("/api/project/main/runs/get", { run_name: "up-models", id: null })).body
    }
    expect(run.status).toBe("done")
    const submission = run.jobs[0].job_submissions.at(-1).id
    const created = await call("/api/users/create", { username: "alice", global_role: "user", email: null, active: true })
    const answers: Array<{ model: string; route: string; answer: { status: number; body: unknown } }> = [
      { model: "UserWithCreds", route: "users/get_my_user", answer: await call("/api/users/get_my_user") },
      { model: "List[User]", route: "users/list", answer: await call("/api/users/list", { return_total_count: null }) },
      { model: "User", route: "users/get_user", answer: await call("/api/users/get_user", { username: "admin" }) },
      { model: "UserWithCreds", route: "users/create", answer: created },
      { model: "UserWithCreds", route: "users/refresh_token", answer: await call("/api/users/refresh_token", { username: "alice" }) },
      { model: "List[Project]", route: "projects/list", answer: await call("/api/projects/list", { include_not_joined: true, return_total_count: null }) },
      { model: "Project", route: "projects/get", answer: await call("/api/projects/main/get") },
      { model: "Project", route: "projects/create", answer: await call("/api/projects/create", { project_name: "second", is_public: false }) },
      { model: "Project", route: "projects/add_members", answer: await call("/api/projects/second/add_members", { members: [{ username: "alice", project_role: "manager" }] }) },
      { model: "RunPlan", route: "runs/get_plan", answer: plan },
      { model: "Run", route: "runs/apply", answer: applied },
      { model: "Run", route: "runs/get", answer: await call("/api/project/main/runs/get", { run_name: "up-models", id: null }) },
      { model: "List[Run]", route: "runs/list", answer: await call("/api/runs/list", { project_name: null, repo_id: null, username: null, only_active: false, include_jobs: true, job_submissions_limit: null, prev_submitted_at: null, prev_run_id: null, limit: 100, ascending: false }) },
      { model: "JobSubmissionLogs", route: "logs/poll", answer: await call("/api/project/main/logs/poll", { run_name: "up-models", job_submission_id: submission, start_time: null, end_time: null, descending: false, next_token: null, limit: 100, diagnose: false }) },
      { model: "JobSubmissionLogs", route: "logs/poll (diagnose)", answer: await call("/api/project/main/logs/poll", { run_name: "up-models", job_submission_id: submission, limit: 100, diagnose: true }) },
      { model: "List[RepoHead]", route: "repos/list", answer: await call("/api/project/main/repos/list") },
      { model: "List[Fleet]", route: "fleets/list", answer: await call("/api/project/main/fleets/list") },
      { model: "List[Instance]", route: "instances/list", answer: await call("/api/instances/list", { project_names: null, fleet_ids: null, only_active: false, prev_created_at: null, prev_id: null, limit: 100, ascending: false }) }
    ]
    for (const a of answers) expect([a.route, a.answer.status]).toEqual([a.route, 200])
    const checked = await python([path.join(here, "check_models.py")], JSON.stringify(answers.map((a) => ({ model: a.model, value: a.answer.body }))))
    expect(checked.stderr).not.toMatch(/Traceback/)
    const results: Array<{ model: string; ok: boolean; errors: Array<string> }> = JSON.parse(checked.stdout)
    expect(results.map((r, i) => [answers[i]!.route, r.errors])).toEqual(answers.map((a) => [a.route, []]))
    // the log's bytes in base64, sources as the client knows them
    const logs = answers.find((a) => a.route === "logs/poll")!.answer.body as { logs: Array<{ message: string; log_source: string }> }
    expect(Buffer.from(logs.logs[0]!.message, "base64").toString()).toBe("models\n")
    const diagnose = answers.find((a) => a.route === "logs/poll (diagnose)")!.answer.body as { logs: Array<{ log_source: string }> }
    expect(new Set(diagnose.logs.map((l) => l.log_source))).toEqual(new Set(["stdout"]))
    // this server's local backend is upstream's on-prem `remote` to the client
    expect(JSON.stringify(plan.body)).not.toContain('"backend":"local"')
    expect(JSON.stringify(plan.body)).toContain('"backend":"remote"')
  }, 180_000)

  it("errors reach the client as the exceptions it expects", async () => {
    const script = `
import json, sys
from dstack.api.server import APIClient
from dstack._internal.core.errors import ClientError, ResourceNotExistsError, ServerClientError
url, token = sys.argv[1:3]
def outcome(f):
    try:
        f()
        return {"ok": True}
    except Exception as e:
        return {"error": type(e).__name__, "msg": str(e)}
good = APIClient(url, token)
print(json.dumps({
    "missing_run": outcome(lambda: good.runs.get("main", "no-such-run")),
    "missing_project": outcome(lambda: good.projects.get("no-such-project")),
    "bad_token": outcome(lambda: APIClient(url, "wrong").users.get_my_user()),
    "unsupported": outcome(lambda: good.volumes.list("main")),
    "exists": outcome(lambda: good.projects.create("main")),
}))
`
    const out = await python(["-c", script, url, TOKEN])
    expect(out.stderr).not.toMatch(/Traceback/)
    const r = JSON.parse(out.stdout)
    expect(r.missing_run).toMatchObject({ error: "ResourceNotExistsError", msg: expect.stringMatching(/no-such-run/) })
    expect(r.missing_project).toMatchObject({ error: "ResourceNotExistsError" })
    expect(r.bad_token).toMatchObject({ error: "ClientError", msg: expect.stringMatching(/check your access token/) })
    expect(r.unsupported).toMatchObject({ error: "ServerClientError", msg: expect.stringMatching(/volumes.*not supported by this dstack-ts server/i) })
    expect(r.exists).toMatchObject({ error: "ResourceExistsError" })
    // a validation problem is a 422 with the field's path; a newer client is refused
    const invalid = await call("/api/project/main/runs/get", { run_name: 5 })
    expect(invalid.status).toBe(422)
    expect(invalid.body.detail[0]).toMatchObject({ loc: ["body", "run_name"] })
    const newer = await call("/api/users/get_my_user", {}, TOKEN, "0.22.0")
    expect(newer.status).toBe(400)
    expect(newer.body.detail[0].msg).toBe("The client/CLI version (0.22.0) is incompatible with the server version (0.21.2).")
  }, 120_000)

  it("the CLI adds the project and runs ps, apply -d, logs, stop and offer", async () => {
    const added = await cli("project", "add", "--name", "main", "--url", url, "--token", TOKEN, "-y")
    expect(added.code, added.stderr + added.stdout).toBe(0)
    fs.writeFileSync(path.join(home, "task.dstack.yml"), "type: task\nname: up-cli\ncommands:\n  - echo hello from the cli\n  - sleep 300\nresources:\n  cpu: 1..\n  memory: 1GB..\n  disk: 1GB..\n")
    const offer = await cli("offer", "--cpu", "1..", "--memory", "1GB..", "--disk", "1GB..")
    expect(offer.code, offer.stderr + offer.stdout).toBe(0)
    // the local backend's offer, as the client shows upstream's on-prem `remote` type
    expect(offer.stdout).toMatch(/1\s+ssh \(local\)\s+cpu=/)
    const applied = await cli("apply", "-f", "task.dstack.yml", "-d", "-y")
    expect(applied.code, applied.stderr + applied.stdout).toBe(0)
    expect(applied.stdout).toMatch(/up-cli/)
    let logs = ""
    for (let i = 0; i < 60 && !logs.includes("hello from the cli"); i++) {
      await new Promise((r) => setTimeout(r, 500))
      logs = (await cli("logs", "up-cli")).stdout
    }
    expect(logs).toContain("hello from the cli")
    const ps = await cli("ps")
    expect(ps.code, ps.stderr).toBe(0)
    expect(ps.stdout).toMatch(/up-cli\s/)
    const stopped = await cli("stop", "up-cli", "-y", "-x")
    expect(stopped.code, stopped.stderr + stopped.stdout).toBe(0)
    let status = ""
    for (let i = 0; i < 60 && !["terminated", "aborted", "done", "failed"].includes(status); i++) {
      await new Promise((r) => setTimeout(r, 250))
      status = (await call("/api/project/main/runs/get", { run_name: "up-cli" })).body.status
    }
    expect(status).toBe("terminated")
    // A finished run's status in upstream's ps is its latest submission's status_message, which
    // the server derives as upstream's does (RunMessages.ts); without it the column is empty.
    const finished = await cli("ps", "-a")
    expect(finished.code, finished.stderr).toBe(0)
    expect(finished.stdout).toMatch(/up-cli\s.*\baborted\b/)
  }, 240_000)

  it("docs/api.md gives the state of every route the client calls", async () => {
    const script = `
import glob, json, os, re
import dstack.api.server as server
paths = set()
for f in glob.glob(os.path.join(os.path.dirname(server.__file__), "_*.py")):
    paths.update(re.findall(r'_request\\(\\s*f?"(/api/[^"]*)"', open(f).read()))
print(json.dumps(sorted(paths)))
`
    const out = await python(["-c", script])
    expect(out.stderr).not.toMatch(/Traceback/)
    const paths: Array<string> = JSON.parse(out.stdout).map((p: string) => p.replace(/\{(\w+)\.value\}/g, "{$1}"))
    expect(paths.length).toBeGreaterThan(60)
    const doc = fs.readFileSync(fileURLToPath(new URL("../../docs/api.md", import.meta.url)), "utf8")
    const stateOf = (p: string) => new RegExp(`^\\| \`(?:GET|POST) ${p.replace(/[{}.]/g, "\\$&")}\` \\| (works|not supported: .+) \\|$`, "m").exec(doc)?.[1]
    expect(paths.filter((p) => stateOf(p) === undefined)).toEqual([])
  }, 60_000)

  it("request_fields.py still generates UpstreamRequestFields.ts as committed", async () => {
    const out = await python([path.join(here, "request_fields.py")])
    expect(out.stderr).not.toMatch(/Traceback/)
    const committed = fs.readFileSync(fileURLToPath(new URL("../../core/src/server/UpstreamRequestFields.ts", import.meta.url)), "utf8")
    expect(out.stdout === committed, "regenerate it: $DSTACK_PY test/upstream/request_fields.py > core/src/server/UpstreamRequestFields.ts").toBe(true)
  }, 60_000)

  it("fields this server does not carry out reach the SDK and the CLI as errors naming them", async () => {
    const script = `
import json, sys
from dstack.api import Client, Resources, Task
from dstack._internal.core.errors import ServerClientError
client = Client.from_config(project_name="main", server_url=sys.argv[1], user_token=sys.argv[2])
res = Resources(cpu="1..", memory="1GB..", disk="1GB..")
out = {}
for name, task in [("plain", Task(commands=["true"], resources=res)), ("tags", Task(commands=["true"], resources=res, tags={"team": "ml"}))]:
    try:
        client.runs.get_run_plan(task)
        out[name] = {"ok": True}
    except ServerClientError as e:
        out[name] = {"error": type(e).__name__, "msg": e.msg, "fields": e.fields}
print(json.dumps(out))
`
    const sdk = await python(["-c", script, url, TOKEN])
    expect(sdk.stderr).not.toMatch(/Traceback/)
    const r = JSON.parse(sdk.stdout)
    expect(r.plain).toEqual({ ok: true })
    expect(r.tags).toEqual({
      error: "ServerClientError",
      msg: `run_spec.configuration.tags is not supported by this server (got {"team":"ml"}; only upstream's default null is accepted)`,
      fields: [["body", "run_spec", "configuration", "tags"]]
    })
    const added = await cli("project", "add", "--name", "main", "--url", url, "--token", TOKEN, "-y")
    expect(added.code, added.stderr + added.stdout).toBe(0)
    fs.writeFileSync(path.join(home, "tagged.dstack.yml"), "type: task\nname: up-tagged\ncommands:\n  - echo never\npriority: 50\nresources:\n  cpu: 1..\n  memory: 1GB..\n  disk: 1GB..\n")
    const applied = await cli("apply", "-f", "tagged.dstack.yml", "-d", "-y")
    expect(applied.code).not.toBe(0)
    expect(applied.stdout + applied.stderr).toContain("run_spec.configuration.priority is not supported by this server (got 50; only upstream's default null is accepted)")
    expect((await call("/api/project/main/runs/get", { run_name: "up-tagged" })).body.detail[0].code).toBe("resource_not_exists")
  }, 120_000)

  it("the CLI lists fleets and sets, lists, gets and deletes secrets", async () => {
    const added = await cli("project", "add", "--name", "main", "--url", url, "--token", TOKEN, "-y")
    expect(added.code, added.stderr + added.stdout).toBe(0)
    const spec = { configuration: { type: "fleet", name: "up-fleet", ssh_config: { user: "dstack", ssh_key: { public: "ssh-ed25519 AAAA test", private: "-----BEGIN OPENSSH PRIVATE KEY-----\nstand-in\n-----END OPENSSH PRIVATE KEY-----\n" }, hosts: ["127.0.0.21"] } } }
    const applied = await call("/api/project/main/fleets/apply", { plan: { spec, current_resource: null }, force: false })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    let listed = ""
    for (let i = 0; i < 100 && !/idle/.test(listed); i++) {
      const out = await cli("fleet", "list")
      expect(out.code, out.stderr + out.stdout).toBe(0)
      listed = out.stdout
      if (!/idle/.test(listed)) await new Promise((r) => setTimeout(r, 300))
    }
    expect(listed).toMatch(/up-fleet/)
    expect(listed).toMatch(/ssh \(remote\)|127\.0\.0\.21/)
    expect(listed).toMatch(/idle/)
    const set = await cli("secret", "set", "up_token", "s3cret-value")
    expect(set.code, set.stderr + set.stdout).toBe(0)
    expect(set.stdout).toContain("OK")
    const list = await cli("secret", "list")
    expect(list.code, list.stderr + list.stdout).toBe(0)
    expect(list.stdout).toMatch(/up_token/)
    expect(list.stdout).not.toContain("s3cret-value")
    const got = await cli("secret", "get", "up_token")
    expect(got.code, got.stderr + got.stdout).toBe(0)
    expect(got.stdout).toMatch(/up_token\s+s3cret-value/)
    const missing = await cli("secret", "get", "no_such")
    expect(missing.code).not.toBe(0)
    expect(missing.stdout + missing.stderr).toMatch(/no_such/)
    const deleted = await cli("secret", "delete", "up_token", "-y")
    expect(deleted.code, deleted.stderr + deleted.stdout).toBe(0)
    expect((await cli("secret", "list")).stdout).not.toMatch(/up_token/)
    expect((await call("/api/project/main/fleets/delete", { names: ["up-fleet"] })).status).toBe(200)
  }, 180_000)

  it("attached apply goes through the server's SSH proxy and streams the job's logs to its end; attach to a finished run says so", async () => {
    // Upstream's CLI: the user's key from get_my_user, `ssh -L` to the proxy the run's
    // job_connection_info names, then the runner's /logs_ws through the forward of port 10999.
    const added = await cli("project", "add", "--name", "main", "--url", url, "--token", TOKEN, "-y")
    expect(added.code, added.stderr + added.stdout).toBe(0)
    // Upstream's CLI checks the proxy's host key (no StrictHostKeyChecking=no for it): the user
    // trusts it once, as docs/ssh-proxy.md says, from the line the server prints.
    // OpenSSH reads ~/.ssh/known_hosts from the account's home, not $HOME: the SSH config the CLI
    // writes its hosts to (it keeps other blocks) names the test home's file.
    const knownHosts = path.join(home, ".ssh", "known_hosts")
    fs.mkdirSync(path.dirname(knownHosts), { recursive: true })
    fs.writeFileSync(knownHosts, `[127.0.0.1]:${server.sshProxy!.port} ${server.sshProxy!.hostPublicKey}\n`)
    fs.mkdirSync(path.join(home, ".dstack", "ssh"), { recursive: true })
    fs.writeFileSync(path.join(home, ".dstack", "ssh", "config"), `Host *\n    UserKnownHostsFile ${knownHosts}\n`)
    fs.writeFileSync(path.join(home, "attached.dstack.yml"), "type: task\nname: up-att\ncommands:\n  - echo hello attached\n  - sleep 10\n  - echo bye\nresources:\n  cpu: 1..\n  memory: 1GB..\n  disk: 1GB..\n")
    const applied = await cli("apply", "-f", "attached.dstack.yml", "-y")
    expect(applied.code, applied.stderr + applied.stdout).toBe(0)
    expect(applied.stdout).toContain("hello attached\nbye\n")
    expect(applied.stdout + applied.stderr).not.toMatch(/Traceback/)
    const run = (await call("/api/project/main/runs/get", { run_name: "up-att" })).body
    expect(run.status).toBe("done")
    expect(run.jobs[0].job_connection_info).toMatchObject({ sshproxy_hostname: "127.0.0.1", sshproxy_port: server.sshProxy!.port })
    const logs = await cli("logs", "up-att")
    expect(logs.code, logs.stderr).toBe(0)
    expect(logs.stdout).toBe("hello attached\nbye\n")
    const attach = await cli("attach", "up-att")
    // Upstream's own message: only a running job can be attached to.
    expect(attach.code).toBe(1)
    expect(attach.stdout).toBe("Failed to find replica=<any running> job=0\n")
  }, 180_000)

  it("dstack-ts's own CLI, on the project upstream's CLI added, runs offer, apply (-d and attached), logs, ps, stop and secret set/list", async () => {
    const added = await cli("project", "add", "--name", "main", "--url", url, "--token", TOKEN, "-y")
    expect(added.code, added.stderr + added.stdout).toBe(0)
    const offer = await ownCli("offer", "--cpu", "1..", "--memory", "1GB..", "--disk", "1GB..")
    expect(offer.code, offer.stderr + offer.stdout).toBe(0)
    expect(offer.stdout).toMatch(/\blocal\b/)
    fs.writeFileSync(path.join(home, "own.dstack.yml"), "type: task\nname: own-cli\ncommands:\n  - echo hello from the own cli\n  - sleep 300\nresources:\n  cpu: 1..\n  memory: 1GB..\n  disk: 1GB..\n")
    const applied = await ownCli("apply", "-f", "own.dstack.yml", "-d", "-y")
    expect(applied.code, applied.stderr + applied.stdout).toBe(0)
    expect(applied.stdout + applied.stderr).toMatch(/own-cli/)
    let logs = ""
    for (let i = 0; i < 60 && !logs.includes("hello from the own cli"); i++) {
      await new Promise((r) => setTimeout(r, 500))
      logs = (await ownCli("logs", "own-cli")).stdout
    }
    expect(logs).toBe("hello from the own cli\n")
    const ps = await ownCli("ps")
    expect(ps.code, ps.stderr).toBe(0)
    expect(ps.stdout).toMatch(/own-cli\s+running\s/)
    const stopped = await ownCli("stop", "own-cli", "-y", "-x")
    expect(stopped.code, stopped.stderr + stopped.stdout).toBe(0)
    let status = ""
    for (let i = 0; i < 60 && status !== "terminated"; i++) {
      await new Promise((r) => setTimeout(r, 250))
      status = (await call("/api/project/main/runs/get", { run_name: "own-cli" })).body.status
    }
    expect(status).toBe("terminated")
    expect((await ownCli("ps", "-a")).stdout).toMatch(/own-cli\s+terminated\s/)
    fs.writeFileSync(path.join(home, "own-attached.dstack.yml"), "type: task\nname: own-att\ncommands:\n  - echo hello attached own\n  - echo bye\nresources:\n  cpu: 1..\n  memory: 1GB..\n  disk: 1GB..\n")
    const attached = await ownCli("apply", "-f", "own-attached.dstack.yml", "-y")
    expect(attached.code, attached.stderr + attached.stdout).toBe(0)
    expect(attached.stdout).toContain("hello attached own\nbye\n")
    expect((await call("/api/project/main/runs/get", { run_name: "own-att" })).body.status).toBe("done")
    const set = await ownCli("secret", "set", "own_token", "own-s3cret")
    expect(set.code, set.stderr + set.stdout).toBe(0)
    const list = await ownCli("secret", "list")
    expect(list.code, list.stderr + list.stdout).toBe(0)
    expect(list.stdout).toMatch(/own_token/)
    expect(list.stdout).not.toContain("own-s3cret")
    // Upstream's CLI sees the secret dstack-ts's set.
    expect((await cli("secret", "list")).stdout).toMatch(/own_token/)
  }, 240_000)

  it("dstack-ts's own CLI, on the project upstream's CLI added, lists, shows and deletes a fleet", async () => {
    const added = await cli("project", "add", "--name", "main", "--url", url, "--token", TOKEN, "-y")
    expect(added.code, added.stderr + added.stdout).toBe(0)
    const spec = { configuration: { type: "fleet", name: "own-fleet", ssh_config: { user: "dstack", ssh_key: { public: "ssh-ed25519 AAAA test", private: "-----BEGIN OPENSSH PRIVATE KEY-----\nstand-in\n-----END OPENSSH PRIVATE KEY-----\n" }, hosts: ["127.0.0.22"] } } }
    expect((await call("/api/project/main/fleets/apply", { plan: { spec }, force: false })).status).toBe(200)
    let listed = { code: null as number | null, stdout: "", stderr: "" }
    for (let i = 0; i < 100 && !/own-fleet.*idle/s.test(listed.stdout); i++) {
      listed = await ownCli("fleet", "list")
      expect(listed.code, listed.stderr + listed.stdout).toBe(0)
      if (!/idle/.test(listed.stdout)) await new Promise((r) => setTimeout(r, 300))
    }
    expect(listed.stdout).toMatch(/own-fleet/)
    expect(listed.stdout).toMatch(/127\.0\.0\.22/)
    const got = await ownCli("fleet", "get", "own-fleet")
    expect(got.code, got.stderr).toBe(0)
    expect(got.stdout).toMatch(/^Fleet own-fleet \(active\)/)
    const missing = await ownCli("fleet", "get", "no-such-fleet")
    expect(missing.code).not.toBe(0)
    expect(missing.stderr).toContain("Fleet no-such-fleet does not exist in project main")
    const deleted = await ownCli("fleet", "delete", "own-fleet", "-y")
    expect(deleted.code, deleted.stderr + deleted.stdout).toBe(0)
    let gone = ""
    for (let i = 0; i < 100 && !/No fleets|terminat/.test(gone); i++) {
      await new Promise((r) => setTimeout(r, 300))
      gone = (await ownCli("fleet", "list")).stdout
    }
    expect(gone).not.toMatch(/own-fleet.*idle/s)
  }, 180_000)
})
