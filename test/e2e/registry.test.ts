// A job whose image is in a private registry: pulled with the configuration's registry_auth
// (through the runner's Docker executor), and refused with a clear reason without it.
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, expect, it } from "vitest"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { appCall } from "../support/api.ts"
import { describeWith } from "../support/components.ts"
import { dockerUnavailableReason } from "../support/docker.ts"
import { registryUnavailableReason, startPrivateRegistry, type PrivateRegistry } from "../support/registry.ts"

const TOKEN = "registry-e2e-token"
const missing = (await dockerUnavailableReason()) ?? registryUnavailableReason()

describeWith("docker-registry", missing === undefined, missing ?? "", () => {
  let server: Server
  let registry: PrivateRegistry

  const call = appCall(() => server, TOKEN)
  const run = async (name: string, configuration: Record<string, unknown>) => {
    const applied = await call("/api/project/main/runs/apply", {
      plan: { run_spec: { run_name: name, repo_id: "reg", repo_data: { repo_type: "virtual" }, configuration: { type: "task", resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." }, ...configuration } } }
    })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    const start = Date.now()
    while (Date.now() - start < 60_000) {
      const r = (await call("/api/project/main/runs/get", { run_name: name })).body
      if (["done", "failed", "terminated"].includes(r.status)) return r
      await new Promise((res) => setTimeout(res, 100))
    }
    throw new Error(`run ${name} did not finish`)
  }

  beforeAll(async () => {
    registry = await startPrivateRegistry()
    server = await createServer({
      state: EmbeddedStateStore.layerMemory(),
      blobs: blobsMemory,
      adminToken: TOKEN,
      plugins: [backendLocal, transportLocal],
      runner: { entry: fileURLToPath(new URL("../../cli/src/runner.ts", import.meta.url)) },
      compute: { defaultBackends: [{ type: "local" }] }
    })
  }, 120_000)
  afterAll(async () => {
    await server?.close()
    await registry?.stop()
  })

  it("refuses to pull a private image without registry_auth, saying the pull failed", async () => {
    const r = await run("no-auth", { image: registry.image, commands: ["echo never"] })
    expect(r.status).toBe("failed")
    const sub = r.jobs[0].job_submissions[0]
    expect(sub.termination_reason).toBe("creating_container_error")
    expect(sub.termination_reason_message).toMatch(new RegExp(registry.host.replace(/[.]/g, "\\.")))
  }, 90_000)

  it("pulls a private image with registry_auth and runs the job in it", async () => {
    const r = await run("with-auth", {
      image: registry.image,
      registry_auth: { username: registry.username, password: registry.password },
      commands: ["echo pulled and running"]
    })
    expect(r.status, JSON.stringify(r.jobs[0].job_submissions[0])).toBe("done")
    const logs = (await call("/api/project/main/logs/poll", { run_name: "with-auth" })).body.logs.map((l: any) => l.message).join("")
    expect(logs).toContain("pulled and running")
  }, 90_000)
})
