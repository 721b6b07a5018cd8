// The TypeScript SDK against a real server on a real port (the default build's plugins): a
// VirtualRepo's files reach the job, logs follow a live run and give the whole log of a
// finished one, stop with abort ends a run, attach forwards a job's ports (process and
// container) to localhost, and list shows what ran.
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Schema } from "effect"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { Client } from "@dstack-ts/client"
import { TaskConfiguration } from "../../core/src/domain/Configuration.ts"
import { VirtualRepo } from "../../core/src/repos/index.ts"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { serve, type Serving } from "../../core/src/server/serve.ts"
import { describeWith } from "../support/components.ts"
import { freeNamedPorts } from "../support/ports.ts"
import { dockerUnavailableReason, ensureBusyboxImage } from "../support/docker.ts"

const TOKEN = "sdk-e2e-token"
let server: Server
let listener: Serving | undefined
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
    runner: { entry: fileURLToPath(new URL("../../cli/src/runner.ts", import.meta.url)) },
    compute: { defaultBackends: [{ type: "local" }] }
  })
  // The server's own serve: attach's tunnels are WebSockets through its upgrade hook.
  listener = await serve(server, { port: 0, handleSignals: false })
  client = Client.connect({ name: "main", url: listener.url, token: TOKEN })
}, 60_000)

afterAll(async () => {
  // Closes the open connections (live log streams) and the server.
  await (listener !== undefined ? listener.close() : server?.close())
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

  it("attaches to a process job: its port is forwarded to map_to_port on localhost, until detach", async () => {
    const local = await freeNamedPorts(2)
    const jobPort = local + 1
    const run = await client.runs.submit(
      task([`mkdir -p www && echo served-by-the-job > www/index.html && cd www && exec python3 -m http.server ${jobPort} --bind 127.0.0.1`], { ports: [`${local}:${jobPort}`] }),
      { runName: "sdk-attach" }
    )
    const ports = await run.attach({ timeoutMs: 30_000 })
    expect(ports).toEqual({ [jobPort]: local })
    let body = ""
    for (let i = 0; i < 50 && body === ""; i++) {
      body = await fetch(`http://127.0.0.1:${local}/index.html`).then((r) => r.text()).catch(() => "")
      if (body === "") await new Promise((r) => setTimeout(r, 100))
    }
    expect(body).toBe("served-by-the-job\n")
    await run.detach()
    expect(run.ports).toBeUndefined()
    await expect(fetch(`http://127.0.0.1:${local}/index.html`)).rejects.toThrow()
    await run.stop({ abort: true })
  }, 60_000)

  it("refuses to attach to a finished run", async () => {
    const run = (await client.runs.get("sdk-run"))!
    await expect(run.attach()).rejects.toThrow(/is done; there is nothing to attach to/)
  })

  it("lists runs and returns undefined for a missing one", async () => {
    const all = await client.runs.list({ all: true })
    expect(all.map((r) => r.name)).toEqual(expect.arrayContaining(["sdk-run", "sdk-stop", "sdk-attach"]))
    expect(await client.runs.get("no-such-run")).toBeUndefined()
  })
})

const dockerMissing = await dockerUnavailableReason()
describeWith("docker", dockerMissing === undefined, dockerMissing ?? "", () => {
  it("attaches to a container job: its published port is forwarded to map_to_port", async () => {
    await ensureBusyboxImage()
    const local = await freeNamedPorts()
    const run = await client.runs.submit(
      task(["mkdir -p /www && echo from-the-container > /www/index.html && exec httpd -f -p 8000 -h /www"], { image: "dstack-ts-test/busybox:1", ports: [`${local}:8000`] }),
      { runName: "sdk-attach-docker" }
    )
    expect(await run.attach({ timeoutMs: 60_000 })).toEqual({ 8000: local })
    let body = ""
    for (let i = 0; i < 50 && body === ""; i++) {
      body = await fetch(`http://127.0.0.1:${local}/index.html`).then((r) => r.text()).catch(() => "")
      if (body === "") await new Promise((r) => setTimeout(r, 100))
    }
    expect(body).toBe("from-the-container\n")
    await run.detach()
    await run.stop({ abort: true })
  }, 90_000)
})
