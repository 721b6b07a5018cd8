// Jobs on this machine through the first-party `local` backend and `local` transport plugins:
// the example configurations, loaded from YAML, run as a process and in a Docker container.
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Schema } from "effect"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { EmbeddedStateStore } from "../../core/src/state/index.ts"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { loadConfiguration } from "../../core/src/config/index.ts"
import { AnyConfiguration } from "../../core/src/domain/Configuration.ts"
import { describeWith } from "../support/components.ts"
import { dockerUnavailableReason, ensureBusyboxImage } from "../support/docker.ts"

const TOKEN = "local-e2e-token"
let server: Server

const call = async (route: string, body?: unknown) => {
  const res = await server.app.request(route, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  return { status: res.status, body: (await res.json()) as any }
}

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
    plugins: [backendLocal, transportLocal],
    compute: { defaultBackends: [{ type: "local" }] }
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

  it("shows the plan's reason when this machine cannot meet a requirement", async () => {
    const plan = await call("/api/project/main/runs/get_plan", {
      run_spec: { repo_id: "x", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["true"], resources: { memory: "100TB.." } } }
    })
    expect(plan.body.job_plans[0].offers).toEqual([])
    expect(plan.body.job_plans[0].no_offers_reason).toMatch(/memory/)
  })
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
