// Secrets end to end, on the first-party `local` backend: a canary secret set through the API
// reaches the job's environment (the job prints only its SHA-256) and nothing else — not an
// API answer other than `secrets/get` to an admin, not a server log line, not a row or file of
// the state store (read through the store and as raw bytes on disk), not the blob store, not
// the runner's files while the job runs, not a plan, not an error. A reference to a secret the
// project lacks fails the job naming the secret.
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest"
import { Effect } from "effect"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { StateStore } from "../../core/src/ports/StateStore.ts"
import { createServer, runOn, type Server, type ServerOptions } from "../../core/src/server/createServer.ts"

const TOKEN = "secrets-e2e-admin-token"
const CANARY = `canary-${crypto.randomUUID()}`
const CANARY_SHA = createHash("sha256").update(CANARY).digest("hex")
const root = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-secrets-e2e-"))
const serverDir = path.join(root, "server")
const workDir = path.join(root, "runners")

/** Everything the server and the test's calls wrote, to be searched for the canary. */
const answers: Array<{ readonly route: string; readonly text: string }> = []
const logged: Array<string> = []

let server: Server
const options: ServerOptions = {
  state: EmbeddedStateStore.layer({ dataDir: path.join(serverDir, "data") }),
  blobs: { driver: "fs", options: { base: path.join(serverDir, "blobs") } },
  adminToken: TOKEN,
  plugins: [backendLocal, transportLocal, (await import("@dstack-ts/blob-unstorage")).default],
  compute: { defaultBackends: [{ type: "local", config: { work_dir: workDir } }] },
  runner: { entry: path.resolve("cli/src/runner.ts") },
  engine: { resyncMs: 1_000 },
  secrets: { keyFile: path.join(serverDir, "secrets.key") }
}

const call = async (route: string, body?: unknown) => {
  const res = await server.app.request(route, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await res.text()
  answers.push({ route, text })
  return { status: res.status, body: text === "" ? undefined : JSON.parse(text) }
}

/** Every file under `dir` whose bytes contain `needle`. */
const filesContaining = (dir: string, needle: string): Array<string> => {
  if (!fs.existsSync(dir)) return []
  const bytes = Buffer.from(needle)
  return (fs.readdirSync(dir, { recursive: true, withFileTypes: true }) as Array<fs.Dirent>)
    .filter((e) => e.isFile())
    .map((e) => path.join(e.parentPath, e.name))
    .filter((file) => {
      try {
        return fs.readFileSync(file).includes(bytes)
      } catch {
        return false
      }
    })
}

const spec = (name: string, env: Record<string, string>, commands: ReadonlyArray<string>) => ({
  run_spec: {
    run_name: name,
    repo_id: "secrets",
    repo_data: { repo_type: "virtual" },
    configuration: { type: "task", env, commands, resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } }
  }
})

const waitFor = async (name: string, done: (run: any) => boolean, timeoutMs = 90_000) => {
  const start = Date.now()
  while (Date.now() - start < timeoutMs) {
    const run = (await call("/api/project/main/runs/get", { run_name: name })).body
    if (done(run)) return run
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`run ${name} did not get there within ${timeoutMs} ms`)
}
const finished = (run: any) => ["done", "failed", "terminated"].includes(run.status)
const logsOf = async (name: string) => (await call("/api/project/main/logs/poll", { run_name: name })).body.logs.map((l: any) => l.message).join("")

beforeAll(async () => {
  for (const method of ["log", "info", "warn", "error", "debug"] as const) {
    const original = console[method].bind(console)
    vi.spyOn(console, method).mockImplementation((...args: Array<unknown>) => {
      logged.push(args.map((a) => (a instanceof Error ? `${a.message}\n${a.stack}` : typeof a === "string" ? a : JSON.stringify(a) ?? String(a))).join(" "))
      original(...args)
    })
  }
  for (const stream of [process.stdout, process.stderr]) {
    const original = stream.write.bind(stream)
    vi.spyOn(stream, "write").mockImplementation(((chunk: unknown, ...rest: Array<unknown>) => {
      logged.push(typeof chunk === "string" ? chunk : Buffer.from(chunk as Uint8Array).toString("utf8"))
      return (original as (...a: Array<unknown>) => boolean)(chunk, ...rest)
    }) as never)
  }
  server = await createServer(options)
}, 120_000)
afterAll(async () => {
  vi.restoreAllMocks()
  await server?.close()
  fs.rmSync(root, { recursive: true, force: true })
})

describe("a canary secret", () => {
  it("reaches the job's env and nothing else", async () => {
    const set = await call("/api/project/main/secrets/create_or_update", { name: "CANARY", value: CANARY })
    expect(set.status).toBe(200)
    answers.pop() // create_or_update answers the value to the admin who set it, as upstream

    const job = spec("uses-canary", { TOKEN: "${{ secrets.CANARY }}" }, [
      // Only the digest is printed; the job waits so that its runner's files can be searched.
      "printf %s \"$TOKEN\" | sha256sum",
      "sleep 4"
    ])
    const plan = await call("/api/project/main/runs/get_plan", job)
    expect(plan.status, JSON.stringify(plan.body)).toBe(200)
    expect(plan.body.run_spec.configuration.env).toEqual({ TOKEN: "${{ secrets.CANARY }}" })
    expect((await call("/api/project/main/runs/apply", { plan: { run_spec: job.run_spec } })).status).toBe(200)

    // While the job runs: its runner's files (work directory, job dir, spills) hold no canary.
    await waitFor("uses-canary", (run) => run.status === "running" || finished(run))
    const deadline = Date.now() + 30_000
    while (!(await logsOf("uses-canary")).includes(CANARY_SHA) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200))
    expect(fs.readdirSync(workDir).length).toBeGreaterThan(0)
    expect(filesContaining(workDir, CANARY)).toEqual([])

    const run = await waitFor("uses-canary", finished)
    expect(run.status, JSON.stringify(run.jobs[0].job_submissions.at(-1))).toBe("done")
    expect(await logsOf("uses-canary")).toContain(CANARY_SHA)
    // The stored job spec keeps the reference, not the value.
    expect(run.jobs[0].job_spec.env.TOKEN).toBe("${{ secrets.CANARY }}")

    // Through the store: runs, jobs, logs and the secret's own row.
    const stored = await runOn(server, Effect.gen(function* () {
      const store = yield* StateStore
      const runs = yield* store.runs.list({ projects: ["main"] })
      const jobs = yield* store.jobs.list({ projects: ["main"] })
      const instances = yield* store.instances.list({ projects: ["main"] })
      const secret = yield* store.secrets.get("main", "CANARY")
      return JSON.stringify({ runs, jobs, instances, secret })
    }))
    expect(stored).toContain("uses-canary")
    expect(stored).not.toContain(CANARY)
  }, 180_000)

  it("a reference to a secret the project lacks fails the job naming it, without any value", async () => {
    const job = spec("missing-secret", { A: "${{ secrets.CANARY }}", B: "${{ secrets.NOT_SET }}" }, ["echo never"])
    expect((await call("/api/project/main/runs/apply", { plan: { run_spec: job.run_spec } })).status).toBe(200)
    const run = await waitFor("missing-secret", finished)
    expect(run.status).toBe("failed")
    const submission = run.jobs[0].job_submissions.at(-1)
    expect(submission.termination_reason_message).toBe(
      "Secrets interpolation error: the job refers to secret NOT_SET, which project main does not have (dstack secret set NAME VALUE)"
    )
    expect(await logsOf("missing-secret")).not.toContain("never")
  }, 120_000)

  it("is in no API answer, log line, database file, blob or runner file", async () => {
    const list = await call("/api/project/main/secrets/list")
    expect(list.body).toEqual([{ id: expect.any(String), name: "CANARY", value: null }])
    await call("/api/runs/list", { project_name: "main" })
    expect(answers.length).toBeGreaterThan(10)
    expect(answers.filter((a) => a.text.includes(CANARY)).map((a) => a.route)).toEqual([])
    expect(logged.filter((line) => line.includes(CANARY))).toEqual([])

    await server.close()
    // A positive control: the digest the job printed is in the stored logs on disk, so the
    // search reads the store's files; the canary is in none of them, nor in blobs or runners.
    expect(filesContaining(serverDir, CANARY_SHA).length).toBeGreaterThan(0)
    expect(filesContaining(serverDir, CANARY)).toEqual([])
    expect(filesContaining(workDir, CANARY)).toEqual([])
    server = await createServer(options)
  }, 120_000)
})
