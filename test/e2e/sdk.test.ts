// The TypeScript SDK against a real server on a real port (the default build's plugins): a
// VirtualRepo's files reach the job, logs follow a live run and give the whole log of a
// finished one, stop with abort ends a run, and list shows what ran.
import { serve } from "@hono/node-server"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Schema } from "effect"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { Client } from "../../core/src/client/Client.ts"
import { TaskConfiguration } from "../../core/src/domain/Configuration.ts"
import { VirtualRepo } from "../../core/src/repos/index.ts"
import { EmbeddedStateStore } from "../../core/src/state/index.ts"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"

const TOKEN = "sdk-e2e-token"
let server: Server
let listener: ReturnType<typeof serve>
let client: Client

const task = (commands: ReadonlyArray<string>, extra: Record<string, unknown> = {}) =>
  Schema.decodeUnknownSync(TaskConfiguration)({ type: "task", commands, resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." }, ...extra })

const collect = async (iterable: AsyncIterable<Uint8Array | string>) => {
  let text = ""
  for await (const chunk of iterable) text += typeof chunk === "string" ? chunk : new TextDecoder().decode(chunk)
  return text
}

beforeAll(async () => {
  server = await createServer({
    state: EmbeddedStateStore.layerMemory(),
    blobs: blobsMemory,
    adminToken: TOKEN,
    plugins: [backendLocal, transportLocal],
    compute: { defaultBackends: [{ type: "local" }] }
  })
  listener = await new Promise((resolve) => {
    const s = serve({ fetch: server.app.fetch, hostname: "127.0.0.1", port: 0 }, () => resolve(s))
  })
  const { port } = listener.address() as AddressInfo
  client = Client.connect({ name: "main", url: `http://127.0.0.1:${port}`, token: TOKEN })
}, 60_000)

afterAll(async () => {
  // Live log streams leave keep-alive connections behind; close them rather than wait
  // (Deno's node:http waits for them on close).
  ;(listener as unknown as { closeAllConnections?: () => void })?.closeAllConnections?.()
  await new Promise<void>((r) => listener?.close(() => r()))
  await server?.close()
})

describe("SDK end to end", () => {
  it("submits a task with a VirtualRepo and follows its logs to the end", async () => {
    const repo = new VirtualRepo({ repoId: "sdk-virtual" })
    await Effect.runPromise(repo.addFile("train.py", "print('trained')\n"))
    const run = await client.runs.submit(task(["cat train.py", "echo epoch 1", "echo epoch 2"]), { runName: "sdk-run", repo })
    expect(run.name).toBe("sdk-run")
    const live = await collect(run.logs())
    expect(live).toBe("print('trained')\nepoch 1\nepoch 2\n")
    await run.refresh()
    expect(run.status).toBe("done")
    // the full log of a finished run, again
    expect(await collect((await client.runs.get("sdk-run"))!.logs())).toBe(live)
  }, 60_000)

  it("stops a live run with abort", async () => {
    const run = await client.runs.submit(task(["echo begin", "sleep 60"]), { runName: "sdk-stop" })
    const start = Date.now()
    while ((await run.refresh()).status !== "running" && Date.now() - start < 20_000) await new Promise((r) => setTimeout(r, 100))
    await run.stop({ abort: true })
    while (!(await run.refresh()).finished && Date.now() - start < 30_000) await new Promise((r) => setTimeout(r, 100))
    expect(run.status).toBe("terminated")
    expect(run.entity.terminationReason).toBe("aborted_by_user")
  }, 60_000)

  it("lists runs and returns undefined for a missing one", async () => {
    const all = await client.runs.list({ all: true })
    expect(all.map((r) => r.name)).toEqual(expect.arrayContaining(["sdk-run", "sdk-stop"]))
    expect(await client.runs.get("no-such-run")).toBeUndefined()
  })
})
