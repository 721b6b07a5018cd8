// Services across a server restart: the registry reads the live services from the store when
// the server starts, so the autoscaler follows an autoscaled service (its desired replica count
// set) before any request reaches it through the proxy.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, runOn, type Server } from "../../core/src/server/createServer.ts"
import { serve, type Serving } from "../../core/src/server/serve.ts"
import { ServiceRegistry } from "../../core/src/services/ServiceRegistry.ts"
import { httpCall } from "../support/api.ts"
import { applyService } from "../support/services.ts"

const TOKEN = "services-restart-token"
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-services-restart-"))
const open: Array<Serving> = []

const start = async (): Promise<{ server: Server; serving: Serving }> => {
  const server = await createServer({
    state: EmbeddedStateStore.layer({ dataDir: path.join(dir, "data") }),
    blobs: blobsMemory,
    adminToken: TOKEN,
    plugins: [backendLocal, transportLocal],
    compute: { defaultBackends: [{ type: "local", config: { max_instances: 4, work_dir: path.join(dir, "local") } }] },
    runner: { entry: path.resolve("cli/src/runner.ts") }
  })
  const serving = await serve(server, { port: 0, handleSignals: false })
  open.push(serving)
  return { server, serving }
}

afterAll(async () => {
  for (const serving of open) await serving.close().catch(() => undefined)
  fs.rmSync(dir, { recursive: true, force: true })
})

describe("services across a server restart", () => {
  it("the autoscaler follows a live service from the start, before any request", async () => {
    const first = await start()
    await applyService(httpCall(first.serving.url, TOKEN), "kept", {
      replicas: "0..2",
      scaling: { metric: "rps", target: 5, scale_up_delay: 0, scale_down_delay: 0 }
    })
    await first.serving.close()
    open.pop()

    const second = await start()
    // No request to the service, and no API call that names it: the registry found it alone.
    const followed = () =>
      runOn(second.server, ServiceRegistry).then((registry) =>
        registry.entries().map((e) => ({ project: e.project, run: e.runName, desired: e.desired })))
    await expect.poll(followed, { timeout: 15_000, interval: 200 }).toEqual([{ project: "main", run: "kept", desired: 0 }])
    await httpCall(second.serving.url, TOKEN)("/api/project/main/runs/stop", { runs_names: ["kept"], abort: true })
  }, 120_000)
})
