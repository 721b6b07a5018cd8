// Jobs on this machine through the first-party `local` backend and `local` transport plugins:
// the example configurations, loaded from YAML, run as a process and in a Docker container;
// and a run whose code comes from a plugin's repo type (examples/repo-archive-url), on a
// runner build that has that plugin.
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as tar from "tar"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Schema } from "effect"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { loadConfiguration } from "../../core/src/config/index.ts"
import { AnyConfiguration } from "../../core/src/domain/Configuration.ts"
import { appCall } from "../support/api.ts"
import { describeWith } from "../support/components.ts"
import { dockerUnavailableReason, ensureBusyboxImage } from "../support/docker.ts"
import repoArchiveUrl, { archiveUrlRepo } from "../../examples/repo-archive-url/archive-url.ts"

const TOKEN = "local-e2e-token"
/** The jobs' hourly log quota in this suite (the server tells each runner). */
const LOG_QUOTA = 100_000
let server: Server

const call = appCall(() => server, TOKEN)

/** Loads an example the way `dstack apply -f` does and submits it under a fresh name. */
const applyExample = async (file: string, runName: string) => {
  const configuration = await Effect.runPromise(loadConfiguration(path.resolve(file)))
  const encoded = Schema.encodeSync(AnyConfiguration)(configuration)
  const res = await call("/api/project/main/runs/apply", {
    plan: { run_spec: { run_name: runName, repo_id: "examples", repo_data: { repo_type: "virtual" }, configuration: encoded } }
  })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
}

const waitFinished = async (name: string, timeoutMs = 60_000) => {
  const start = Date.now()
  while (Date.now() - start < timeoutMs) {
    const run = (await call("/api/project/main/runs/get", { run_name: name })).body
    if (["done", "failed", "terminated"].includes(run.status)) return run
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`run ${name} did not finish within ${timeoutMs} ms`)
}

const logsOf = async (name: string) =>
  (await call("/api/project/main/logs/poll", { run_name: name })).body.logs.map((l: any) => l.message).join("")

beforeAll(async () => {
  server = await createServer({
    state: EmbeddedStateStore.layerMemory(),
    blobs: blobsMemory,
    adminToken: TOKEN,
    // The repo type's plugin is in the server build too: plan and apply refuse a type it lacks.
    plugins: [backendLocal, transportLocal, repoArchiveUrl],
    compute: { defaultBackends: [{ type: "local" }] },
    // the runner build the local backend starts: the CLI's default one (as `dstack server`)
    runner: { entry: path.resolve("cli/src/runner.ts") },
    // a short resync, so that idle instances are reaped within the test; a small log quota
    engine: { resyncMs: 1_000, logQuotaPerJobHour: LOG_QUOTA }
  })
}, 60_000)
afterAll(async () => {
  await server?.close()
})

describe("local backend end to end", () => {
  it("runs examples/hello as processes on this machine", async () => {
    await applyExample("examples/hello/.dstack.yml", "hello-local")
    const run = await waitFinished("hello-local")
    expect(run.status, JSON.stringify(run.jobs[0].job_submissions)).toBe("done")
    expect(run.jobs[0].job_submissions[0].job_provisioning_data.backend).toBe("local")
    const logs = await logsOf("hello-local")
    expect(logs).toContain("Hello from dstack-ts")
    expect(logs).toContain("DSTACK_RUN_NAME=hello-local")
  }, 90_000)

  it("lists backend types and the project's backends, and checks a configuration before storing it", async () => {
    expect((await call("/api/backends/list_types")).body).toEqual(["local"])
    expect((await call("/api/project/main/backends/list")).body).toEqual([{ name: "local", config: {}, is_default: true }])
    const bad = await call("/api/project/main/backends/create", { type: "local", max_instances: "lots" })
    expect(bad.status).toBe(400)
    expect(bad.body.detail[0].msg).toMatch(/^Invalid local backend configuration: max_instances: expected .*, got "lots"$/)
    const unknown = await call("/api/project/main/backends/create", { type: "aws", regions: ["us-east-1"] })
    expect(unknown.status).toBe(400)
    expect(unknown.body.detail[0].msg).toMatch(/No installed plugin provides the aws backend/)
    const ok = await call("/api/project/main/backends/create", { type: "local", max_instances: 2 })
    expect(ok.status, JSON.stringify(ok.body)).toBe(200)
    expect((await call("/api/project/main/backends/list")).body).toEqual([{ name: "local", config: { max_instances: 2 }, is_default: false }])
    expect((await call("/api/project/main/backends/create", { type: "local" })).status).toBe(400)
    expect((await call("/api/project/main/backends/delete", { backends_names: ["local"] })).status).toBe(200)
    expect((await call("/api/project/main/backends/list")).body[0].is_default).toBe(true)
  })

  it("lists the instance a run used and gets it by id", async () => {
    const list = await call("/api/instances/list", { project_names: ["main"] })
    expect(list.status).toBe(200)
    const instance = list.body.find((i: any) => i.backend === "local")
    expect(instance).toBeDefined()
    expect(["idle", "busy", "terminated"]).toContain(instance.status)
    const got = await call("/api/project/main/instances/get", { id: instance.id })
    expect(got.body.id).toBe(instance.id)
    expect((await call("/api/project/main/instances/get", { id: "nope" })).status).toBe(400)
    expect((await call("/api/project/main/fleets/list")).body).toEqual([])
  })

  it("queues a job while every instance is busy, and runs it when one is free", async () => {
    expect((await call("/api/projects/create", { project_name: "queue" })).status).toBe(200)
    expect((await call("/api/project/queue/backends/create", { type: "local", max_instances: 1 })).status).toBe(200)
    const submit = (name: string, commands: Array<string>) =>
      call("/api/project/queue/runs/apply", {
        plan: { run_spec: { run_name: name, repo_id: "q", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands, resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } } } }
      })
    expect((await submit("first-in-line", ["sleep 2", "echo first"])).status).toBe(200)
    expect((await submit("second-in-line", ["echo second"])).status).toBe(200)
    const get = async (name: string) => (await call("/api/project/queue/runs/get", { run_name: name })).body
    const start = Date.now()
    let first: any
    let second: any
    while (Date.now() - start < 60_000) {
      ;[first, second] = [await get("first-in-line"), await get("second-in-line")]
      if (["done", "failed", "terminated"].includes(first.status) && ["done", "failed", "terminated"].includes(second.status)) break
      await new Promise((r) => setTimeout(r, 100))
    }
    expect(first.status).toBe("done")
    expect(second.status, JSON.stringify(second.jobs[0].job_submissions)).toBe("done")
    const firstSub = first.jobs[0].job_submissions[0]
    const secondSub = second.jobs[0].job_submissions[0]
    // one instance: the second ran on the first's instance, after it was released
    expect(secondSub.job_provisioning_data.instance_id).toBe(firstSub.job_provisioning_data.instance_id)
    expect(new Date(secondSub.finished_at).getTime()).toBeGreaterThan(new Date(firstSub.finished_at).getTime())
  }, 90_000)

  it("runs jobs waiting for the one instance in the order they were submitted", async () => {
    expect((await call("/api/projects/create", { project_name: "fifo" })).status).toBe(200)
    // Not the configuration of the test above: the same one would share its backend (and its
    // one slot, held by that test's idle instance).
    expect((await call("/api/project/fifo/backends/create", { type: "local", max_instances: 1, terminate_grace_seconds: 1 })).status).toBe(200)
    const names = ["fifo-0", "fifo-1", "fifo-2", "fifo-3"]
    for (const [i, name] of names.entries()) {
      const res = await call("/api/project/fifo/runs/apply", {
        plan: { run_spec: { run_name: name, repo_id: "q", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: [i === 0 ? "sleep 1" : "true", `echo ${name}`], resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } } } }
      })
      expect(res.status).toBe(200)
    }
    const get = async (name: string) => (await call("/api/project/fifo/runs/get", { run_name: name })).body
    const start = Date.now()
    let runs: Array<any> = []
    while (Date.now() - start < 60_000) {
      runs = await Promise.all(names.map(get))
      if (runs.every((r) => ["done", "failed", "terminated"].includes(r.status))) break
      await new Promise((r) => setTimeout(r, 100))
    }
    for (const run of runs) expect(run.status, JSON.stringify(run.jobs[0].job_submissions)).toBe("done")
    const subs = runs.map((r) => r.jobs[0].job_submissions[0])
    // One instance for all, and each waiting job got it after the one submitted before it.
    expect(new Set(subs.map((s) => s.job_provisioning_data.instance_id)).size).toBe(1)
    const finished = subs.map((s) => new Date(s.finished_at).getTime())
    expect([...finished].sort((a, b) => a - b)).toEqual(finished)
  }, 90_000)

  it("terminates an instance that stays idle longer than the run's idle_duration", async () => {
    expect((await call("/api/projects/create", { project_name: "idle" })).status).toBe(200)
    const res = await call("/api/project/idle/runs/apply", {
      plan: { run_spec: { run_name: "short-lived", repo_id: "q", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["echo bye"], idle_duration: "1s", resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } } } }
    })
    expect(res.status).toBe(200)
    let run: any
    const start = Date.now()
    while (Date.now() - start < 30_000) {
      run = (await call("/api/project/idle/runs/get", { run_name: "short-lived" })).body
      if (run.status === "done") break
      await new Promise((r) => setTimeout(r, 100))
    }
    expect(run.status).toBe("done")
    const pid = JSON.parse(run.jobs[0].job_submissions[0].job_provisioning_data.backend_data).pid as number
    let instance: any
    while (Date.now() - start < 30_000) {
      instance = (await call("/api/instances/list", { project_names: ["idle"] })).body[0]
      if (instance?.status === "terminated") break
      await new Promise((r) => setTimeout(r, 200))
    }
    expect(instance.status).toBe("terminated")
    expect(instance.termination_reason).toBe("idle_duration exceeded")
    expect(instance.idle_duration).toBe(1)
    // the runner process is gone too
    expect(() => process.kill(pid, 0)).toThrow()
  }, 60_000)

  it("stops a job that writes past its hourly log quota: failed, log_quota_exceeded, the log cut at the quota", async () => {
    const res = await call("/api/project/main/runs/apply", {
      plan: { run_spec: { run_name: "chatty", repo_id: "examples", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["head -c 300000 /dev/zero | tr '\\0' z", "sleep 120"] } } }
    })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    const run = await waitFinished("chatty")
    const submission = run.jobs[0].job_submissions[0]
    expect(run.status).toBe("failed")
    expect(submission).toMatchObject({ status: "failed", termination_reason: "log_quota_exceeded" })
    expect(submission.termination_reason_message).toBe("the job wrote more than its log quota of 100,000 bytes within an hour")
    expect(await logsOf("chatty")).toBe("z".repeat(LOG_QUOTA))
  })

  it("shows the plan's reason when this machine cannot meet a requirement", async () => {
    const plan = await call("/api/project/main/runs/get_plan", {
      run_spec: { repo_id: "x", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["true"], resources: { memory: "100TB.." } } }
    })
    expect(plan.body.job_plans[0].offers).toEqual([])
    expect(plan.body.job_plans[0].no_offers_reason).toMatch(/memory/)
    const elsewhere = await call("/api/project/main/runs/get_plan", {
      run_spec: { repo_id: "x", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["true"], backends: ["fake-cloud"] } }
    })
    expect(elsewhere.body.job_plans[0].no_offers_reason).toBe("no offers: backends: fake-cloud is not configured in this project (it has: local)")
  })
})

describe("a run whose code comes from a plugin's repo type (examples/repo-archive-url)", () => {
  let site: http.Server
  let archiveUrl: string
  let archiveSha256: string

  beforeAll(async () => {
    // The archive the runner downloads: data/message.txt in a tar.gz, served on loopback.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-archive-url-"))
    fs.mkdirSync(path.join(dir, "data"))
    fs.writeFileSync(path.join(dir, "data", "message.txt"), "hello from an archive at a URL\n")
    const chunks: Array<Buffer> = []
    for await (const chunk of tar.c({ gzip: true, cwd: dir }, ["data"]) as AsyncIterable<Buffer>) chunks.push(chunk)
    const archive = Buffer.concat(chunks)
    archiveSha256 = createHash("sha256").update(archive).digest("hex")
    site = http.createServer((req, res) => {
      if (req.url === "/code.tar.gz") res.writeHead(200, { "content-type": "application/gzip" }).end(archive)
      else res.writeHead(404).end()
    })
    await new Promise<void>((resolve) => site.listen(0, "127.0.0.1", resolve))
    archiveUrl = `http://127.0.0.1:${(site.address() as AddressInfo).port}/code.tar.gz`
  })
  afterAll(() => new Promise<void>((resolve) => (site ? site.close(() => resolve()) : resolve())))

  /** Packs with the plugin's Repo (as a client would), registers and uploads the code, applies a task. */
  const runWithCode = async (project: string, runName: string, pin: { url: string; sha256: string }) => {
    const packed = await Effect.runPromise(archiveUrlRepo.pack({ type: "archive-url", ...pin }))
    const repoData = { repo_type: "archive-url", url: pin.url, sha256: pin.sha256 }
    expect((await call(`/api/project/${project}/repos/init`, { repo_id: "archive", repo_info: repoData })).status).toBe(200)
    const upload = await server.app.request(`/api/project/${project}/repos/upload_code?repo_id=archive&hash=${packed.codeHash}`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/octet-stream" },
      body: packed.archive as Uint8Array<ArrayBuffer>
    })
    expect(upload.status, await upload.clone().text()).toBe(200)
    const res = await call(`/api/project/${project}/runs/apply`, {
      plan: {
        run_spec: {
          run_name: runName,
          repo_id: "archive",
          repo_data: repoData,
          repo_code_hash: packed.codeHash,
          configuration: { type: "task", commands: ["cat data/message.txt"], resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } }
        }
      }
    })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    const start = Date.now()
    while (Date.now() - start < 60_000) {
      const run = (await call(`/api/project/${project}/runs/get`, { run_name: runName })).body
      if (["done", "failed", "terminated"].includes(run.status)) {
        const logs = (await call(`/api/project/${project}/logs/poll`, { run_name: runName })).body.logs.map((l: any) => l.message).join("")
        return { run, logs, submission: run.jobs[0].job_submissions[0] }
      }
      await new Promise((r) => setTimeout(r, 100))
    }
    throw new Error(`run ${runName} did not finish within 60 s`)
  }

  it("finishes done with the archive's file in its log, on a runner build with the plugin (runner_entry)", async () => {
    expect((await call("/api/projects/create", { project_name: "archive" })).status).toBe(200)
    const created = await call("/api/project/archive/backends/create", {
      type: "local",
      max_instances: 1,
      terminate_grace_seconds: 1,
      runner_entry: path.resolve("examples/repo-archive-url/runner.ts")
    })
    expect(created.status, JSON.stringify(created.body)).toBe(200)
    const { run, logs, submission } = await runWithCode("archive", "from-an-archive", { url: archiveUrl, sha256: archiveSha256 })
    expect(run.status, JSON.stringify(submission)).toBe("done")
    expect(logs).toContain("hello from an archive at a URL")
    expect(run.run_spec.repo_data).toEqual({ repo_type: "archive-url", url: archiveUrl, sha256: archiveSha256 })

    // A pin that does not match the archive: the job fails, saying so.
    const wrong = await runWithCode("archive", "wrong-pin", { url: archiveUrl, sha256: "0".repeat(64) })
    expect(wrong.run.status).toBe("failed")
    expect(wrong.submission.termination_reason_message).toContain(`has sha256 ${archiveSha256}, but the run pins ${"0".repeat(64)}`)
  }, 120_000)

  it("fails on a runner build without the plugin, naming the repo type to add", async () => {
    const { run, submission } = await runWithCode("main", "archive-without-plugin", { url: archiveUrl, sha256: archiveSha256 })
    expect(run.status).toBe("failed")
    expect(submission.termination_reason).toBe("executor_error")
    expect(submission.termination_reason_message).toContain("which this runner cannot materialize (it knows: local, remote, virtual)")
    expect(submission.termination_reason_message).toContain("add the plugin that contributes the archive-url repo to the runner build's plugins")
  }, 90_000)
})

const dockerMissing = await dockerUnavailableReason()
describeWith("docker", dockerMissing === undefined, dockerMissing ?? "", () => {
  it("runs examples/hello-docker in a container", async () => {
    await ensureBusyboxImage()
    await applyExample("examples/hello-docker/.dstack.yml", "hello-docker-local")
    const run = await waitFinished("hello-docker-local")
    expect(run.status, JSON.stringify(run.jobs[0].job_submissions)).toBe("done")
    const logs = await logsOf("hello-docker-local")
    expect(logs).toContain("Hello from dstack-ts")
    expect(logs).toContain("inside a container as 0")
  }, 120_000)
})
