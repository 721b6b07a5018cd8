// The examples, each exercised for real (examples/custom-server has its own file, which runs on
// Deno too: example-custom-server.test.ts): the Fake Cloud backend plugin planning and running a job in a createServer,
// the GeoJSON codec plugin through its conformance suite and AutoHandler, the HTTP task (process
// and container) reached through run.attach(), the service and dev-environment examples run (and
// the service as upstream writes it refused, each key named), and the stacks scripts and the CLI
// commands of their README run against a real server.
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { AddressInfo } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { serve, type Serving } from "../../core/src/server/serve.ts"
import { it as effectIt } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { AnyConfiguration, AutoHandler, Backend, BlobStore, createServer, offersForJob, PluginHost, Requirements, runOn, type Server, TaskConfiguration, VirtualRepo } from "@dstack-ts/core"
import { Client } from "@dstack-ts/client"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { testBackend, testCodec } from "@dstack-ts/core/testing"
import backendLocal, { RunnerCommand } from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import dataframePlugin, { codecs as dataframeCodecs } from "@dstack-ts/handler-dataframe"
import plotPlugin, { codecs as plotCodecs } from "@dstack-ts/handler-plot"
import modelPlugin, { codecs as modelCodecs } from "@dstack-ts/handler-model"
import fakeCloud, { makeFakeCloud } from "../../examples/custom-backend/fake-cloud.ts"
import geojsonPlugin, { geojson, type FeatureCollection } from "../../examples/custom-encoder/geojson.ts"
import { appCall, httpCall, type Call } from "../support/api.ts"
import { describeWith } from "../support/components.ts"
import { logsOf, runSpec, waitFinished, wireConfiguration } from "../support/examples.ts"
import { dockerUnavailableReason, ensureBusyboxImage } from "../support/docker.ts"
import transportDirect from "@dstack-ts/transport-direct"
import { CLI } from "../support/cli.ts"

// ---------------------------------------------------------------------------------------------
// examples/custom-backend: the Fake Cloud plugin

const requirements = Schema.decodeUnknownSync(Requirements)({ resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } })

// Its instances run the CLI's runner build, as `dstack server`'s would.
const RUNNER_ENTRY = path.resolve("cli/src/runner.ts")

testBackend("examples/custom-backend fake-cloud", Layer.scoped(Backend.Backend, makeFakeCloud({ runner_entry: RUNNER_ENTRY })), { requirements })

describe("examples/custom-backend in a server", () => {
  const TOKEN = "examples-fake-cloud-token"
  let server: Server
  let call: Call

  beforeAll(async () => {
    server = await createServer({
      state: EmbeddedStateStore.layerMemory(),
      blobs: BlobStore.layerMemory,
      adminToken: TOKEN,
      plugins: [fakeCloud, transportDirect],
      runner: { entry: RUNNER_ENTRY },
      compute: { defaultBackends: [{ type: "fake-cloud" }] }
    })
    call = appCall(() => server, TOKEN)
  }, 60_000)
  afterAll(async () => {
    await server?.close()
  })

  const offersOf = (plan: any) =>
    plan.job_plans[0].offers.map((o: any) => `${o.region} ${o.instance.name} ${o.price}`)

  it("plans every offer of both regions, cheapest first", async () => {
    const configuration = await wireConfiguration("examples/custom-backend/.dstack.yml", { regions: undefined })
    const plan = await call("/api/project/main/runs/get_plan", { run_spec: runSpec(configuration) })
    expect(plan.status, JSON.stringify(plan.body)).toBe(200)
    expect(offersOf(plan.body)).toEqual([
      "us-east fc.small 0.1",
      "eu-west fc.small 0.12",
      "us-east fc.large 0.4",
      "eu-west fc.large 0.48"
    ])
  })

  it("keeps to the configuration's regions and says why the other region is left out", async () => {
    const configuration = await wireConfiguration("examples/custom-backend/.dstack.yml")
    const plan = await call("/api/project/main/runs/get_plan", { run_spec: runSpec(configuration) })
    expect(offersOf(plan.body)).toEqual(["eu-west fc.small 0.12", "eu-west fc.large 0.48"])

    const offers = await runOn(server, offersForJob("main", requirements, { regions: ["eu-west"] }))
    const excludedUsEast = offers.excluded.filter((e) => e.offer.region === "us-east")
    expect(excludedUsEast).toHaveLength(2)
    for (const e of excludedUsEast) expect(e.reasons).toEqual(["regions: us-east is not in [eu-west]"])

    // With no region that has offers, the plan itself gives the reason.
    const nowhere = await call("/api/project/main/runs/get_plan", { run_spec: runSpec({ ...configuration, regions: ["ap-south"] }) })
    expect(nowhere.body.job_plans[0].offers).toEqual([])
    expect(nowhere.body.job_plans[0].no_offers_reason).toContain("regions: us-east is not in [ap-south]")
  })

  it("runs the job on the cheaper offer in the region asked for", async () => {
    const configuration = await wireConfiguration("examples/custom-backend/.dstack.yml")
    const applied = await call("/api/project/main/runs/apply", { plan: { run_spec: runSpec(configuration, "hello-fake-cloud") } })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    const run = await waitFinished(call, "hello-fake-cloud")
    expect(run.status, JSON.stringify(run.jobs[0].job_submissions)).toBe("done")
    const data = run.jobs[0].job_submissions[0].job_provisioning_data
    expect([data.backend, data.region, data.instance_type.name, data.price]).toEqual(["fake-cloud", "eu-west", "fc.small", 0.12])
    expect(await logsOf(call, "hello-fake-cloud")).toContain("Hello from dstack-ts")
  }, 120_000)
})

// ---------------------------------------------------------------------------------------------
// examples/custom-encoder: the GeoJSON codec plugin

const cities: FeatureCollection = {
  type: "FeatureCollection",
  features: [
    { type: "Feature", id: "ber", geometry: { type: "Point", coordinates: [13.4, 52.52] }, properties: { name: "Berlin" } },
    { type: "Feature", id: "lis", geometry: { type: "Point", coordinates: [-9.14, 38.72] }, properties: { name: "Lisbon" } },
    {
      type: "Feature",
      geometry: { type: "Polygon", coordinates: [[[2.2, 48.8], [2.5, 48.8], [2.5, 48.9], [2.2, 48.8]]] },
      properties: null
    }
  ]
}

testCodec("examples/custom-encoder geojson", geojson, {
  accepted: [
    { name: "points and a polygon", value: cities },
    { name: "an empty collection", value: { type: "FeatureCollection", features: [] } },
    { name: "a feature without geometry", value: { type: "FeatureCollection", features: [{ type: "Feature", geometry: null, properties: { a: 1 } }] } }
  ],
  rejected: [
    { name: "a single Feature", value: cities.features[0] },
    { name: "a plain object", value: { a: 1 } },
    { name: "a string", value: "FeatureCollection" },
    { name: "a collection of non-features", value: { type: "FeatureCollection", features: [1, 2] } }
  ],
  corrupt: [
    { name: "bytes that are not JSON", body: new Uint8Array([0xff, 0xfe, 0x00]) },
    { name: "JSON that is not a FeatureCollection", body: new TextEncoder().encode(JSON.stringify({ type: "Point", coordinates: [0, 0] })) }
  ]
})

describe("examples/custom-encoder through AutoHandler", () => {
  const installed = AutoHandler.layer.pipe(Layer.provide(PluginHost.layerCodecs), Layer.provide(PluginHost.layer([geojsonPlugin])))

  effectIt.effect("with the plugin installed, a FeatureCollection round-trips as application/geo+json", () =>
    Effect.gen(function*() {
      const auto = yield* AutoHandler.AutoHandler
      const encoded = yield* auto.encode(cities)
      expect(encoded.codec).toBe("geojson/feature-collection")
      expect(encoded.contentType).toBe("application/geo+json")
      expect(encoded.metadata).toMatchObject({ features: 3, bbox: [-9.14, 38.72, 13.4, 52.52] })
      expect(yield* auto.decode(encoded)).toEqual(cities)
    }).pipe(Effect.provide(installed)))

  effectIt.effect("without the plugin, decoding a stored GeoJSON payload fails with NotInstalled", () =>
    Effect.gen(function*() {
      const stored = yield* geojson.encode(cities)
      const error = yield* Effect.flip(AutoHandler.make([]).decode(stored))
      expect(error.reason).toBe("NotInstalled")
      expect(error.message).toContain("application/geo+json")
    }))

  // A third-party codec names its package in `metadata.plugin`; the AutoHandler uses it.
  effectIt.effect("without the plugin, the decode error names @acme/handler-geojson", () =>
    Effect.gen(function*() {
      const stored = yield* geojson.encode(cities)
      const error = yield* Effect.flip(AutoHandler.make([]).decode(stored))
      expect(error.message).toContain("@acme/handler-geojson")
    }))
})

// ---------------------------------------------------------------------------------------------
// examples/http-task and examples/stacks: a real server on a real port with the default build's
// plugins, driven by the SDK, by the example scripts as child processes, and by the CLI.

const dockerMissing = await dockerUnavailableReason()

describe("examples/http-task and examples/stacks on a real server", () => {
  const TOKEN = "examples-default-build-token"
  let server: Server
  let listener: Serving | undefined
  let url = ""
  let client: Client
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-example-home-"))

  beforeAll(async () => {
    server = await createServer({
      state: EmbeddedStateStore.layerMemory(),
      blobs: BlobStore.layerMemory,
      adminToken: TOKEN,
      plugins: [backendLocal, transportLocal, dataframePlugin, plotPlugin, modelPlugin],
      runner: { entry: path.resolve("cli/src/runner.ts") },
      compute: { defaultBackends: [{ type: "local" }] }
    })
    // The server's own serve: attach's tunnels are WebSockets through its upgrade hook.
    listener = await serve(server, { port: 0, handleSignals: false })
    url = listener.url
    client = Client.connect({ name: "main", url, token: TOKEN })
  }, 60_000)

  afterAll(async () => {
    // Closes the open connections (live log streams) and the server.
    await (listener !== undefined ? listener.close() : server?.close())
    fs.rmSync(home, { recursive: true, force: true })
  }, 30_000)

  /** What `dstack` and the scripts read instead of ~/.dstack/config.yml. */
  const clientEnv = () => ({ ...process.env, DSTACK_SERVER_URL: url, DSTACK_TOKEN: TOKEN, DSTACK_PROJECT: "main", HOME: home })

  /** A free local port (the OS picks one, then it is released for the job or the forward). */
  const freePort = async (): Promise<number> => {
    const net = await import("node:net")
    return new Promise((resolve, reject) => {
      const probe = net.createServer().once("error", reject)
      probe.listen(0, "127.0.0.1", () => {
        const { port } = probe.address() as AddressInfo
        probe.close(() => resolve(port))
      })
    })
  }

  const fetchText = async (local: number): Promise<string> => {
    for (let i = 0; i < 100; i++) {
      const body = await fetch(`http://127.0.0.1:${local}/`).then((r) => r.text()).catch(() => "")
      if (body !== "") return body
      await new Promise((r) => setTimeout(r, 100))
    }
    throw new Error(`nothing answered on 127.0.0.1:${local}`)
  }

  const logText = async (run: { logs: () => AsyncIterable<Uint8Array> }) => {
    let text = ""
    for await (const chunk of run.logs()) text += new TextDecoder().decode(chunk)
    return text
  }

  /** The example configuration as a TaskConfiguration, with the ports (and env) a test can use. */
  const taskOf = async (file: string, patch: Record<string, unknown>) =>
    Schema.decodeUnknownSync(TaskConfiguration)(await wireConfiguration(file, patch))

  it("examples/http-task/.dstack.yml: the job's server answers through run.attach(), and stops on SIGTERM", async () => {
    const [local, jobPort] = [await freePort(), await freePort()]
    const task = await taskOf("examples/http-task/.dstack.yml", { ports: [`${local}:${jobPort}`], env: { PORT: String(jobPort) } })
    // The run's code: the server script at the path the configuration names (as `dstack apply`
    // from the repository root would upload it).
    const repo = new VirtualRepo({ repoId: "examples-http-task" })
    await Effect.runPromise(repo.addFile("examples/http-task/server.mjs", fs.readFileSync("examples/http-task/server.mjs", "utf8")))
    const run = await client.runs.submit(task, { runName: "http-task-example", repo })
    expect(await run.attach({ timeoutMs: 60_000 })).toEqual({ [jobPort]: local })
    expect(await fetchText(local)).toBe(`Hello from http-task-example, served on port ${jobPort}\n`)
    await run.detach()
    await expect(fetch(`http://127.0.0.1:${local}/`)).rejects.toThrow()
    await run.stop()
    const start = Date.now()
    while (!(await run.refresh()).finished && Date.now() - start < 60_000) await new Promise((r) => setTimeout(r, 200))
    expect(run.status).toBe("terminated")
    const logs = await logText(run)
    expect(logs).toContain(`listening on port ${jobPort}`)
    expect(logs).toContain("GET /")
  }, 120_000)

  describeWith("docker", dockerMissing === undefined, dockerMissing ?? "", () => {
    it("examples/http-task/docker.dstack.yml: busybox httpd in a container, reached through its published port", async () => {
      await ensureBusyboxImage()
      const local = await freePort()
      const task = await taskOf("examples/http-task/docker.dstack.yml", { ports: [`${local}:8000`] })
      const run = await client.runs.submit(task, { runName: "http-task-docker-example" })
      expect(await run.attach({ timeoutMs: 90_000 })).toEqual({ 8000: local })
      expect(await fetchText(local)).toBe("Hello from http-task-docker-example, served by busybox httpd\n")
      await run.detach()
      await run.stop({ abort: true })
    }, 150_000)
  })

  /** An example configuration as `dstack apply` reads it, with `patch` over its YAML keys. */
  const configurationOf = async (file: string, patch: Record<string, unknown> = {}) =>
    Schema.decodeUnknownSync(AnyConfiguration)(await wireConfiguration(file, patch))

  const waitStatus = async (run: { refresh: () => Promise<unknown>; status: string; finished: boolean }, status: string, timeoutMs = 60_000) => {
    const start = Date.now()
    while (run.status !== status && !run.finished && Date.now() - start < timeoutMs) {
      await new Promise((r) => setTimeout(r, 200))
      await run.refresh()
    }
    expect(run.status).toBe(status)
  }

  it("examples/service/.dstack.yml: its one replica answers on the service's port until stopped", async () => {
    const port = await freePort()
    const service = await configurationOf("examples/service/.dstack.yml", { port, env: { PORT: String(port) } })
    const run = await client.runs.submit(service as never, { runName: "web-example" })
    expect(run.entity.jobs.map((j) => j.jobSpec.servicePort)).toEqual([port])
    expect(await fetchText(port)).toBe("Hello from a dstack-ts service\n")
    await run.refresh()
    expect(run.status).toBe("running")
    await run.stop()
    await waitStatus(run, "terminated")
  }, 120_000)

  it("examples/dev-environment/.dstack.yml: runs init, then stays up until stopped", async () => {
    const dev = await configurationOf("examples/dev-environment/.dstack.yml")
    const run = await client.runs.submit(dev as never, { runName: "dev-example" })
    let logs = ""
    const start = Date.now()
    while (!logs.includes("ssh-remote+dev-example") && Date.now() - start < 60_000) {
      await new Promise((r) => setTimeout(r, 200))
      logs = (await (await fetch(`${url}/api/project/main/logs/poll`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }, body: JSON.stringify({ run_name: "dev-example" }) })).json()).logs.map((l: { message: string }) => l.message).join("")
    }
    expect(logs).toMatch(/dev environment ready on \w+, in \//)
    // ide: vscode — the link after init, to the directory init ran in (as upstream's job prints it).
    const dir = /in (\/\S+)\n/.exec(logs)![1]
    expect(logs).toContain(`To open in VS Code, use link below:\n\n  vscode://vscode-remote/ssh-remote+dev-example${dir}\n`)
    await run.refresh()
    expect(run.status).toBe("running")
    await run.stop({ abort: true })
    await waitStatus(run, "terminated")
  }, 120_000)

  it("the service example with a gateway and https: false (upstream's gateway keys) is refused at get_plan, apply and submit, each key named", async () => {
    // examples/service as it would be written for an upstream gateway: here the server is the gateway.
    const upstream = await wireConfiguration("examples/service/.dstack.yml", { gateway: "my-gateway", https: false })
    const call = httpCall(url, TOKEN)
    const spec = runSpec(upstream, "web-refused")
    const plan = await call("/api/project/main/runs/get_plan", { run_spec: spec })
    expect(plan.status).toBe(400)
    // upstream's 400: code `error`, the field path in `fields`
    expect(plan.body.detail.map((d: any) => [d.code, d.fields[0].join(".")])).toEqual([
      ["error", "body.run_spec.configuration.gateway"],
      ["error", "body.run_spec.configuration.https"]
    ])
    expect(plan.body.detail[0].msg).toMatch(/^`gateway` is not supported: the server is the gateway here/)
    const applied = await call("/api/project/main/runs/apply", { plan: { run_spec: spec } })
    expect([applied.status, applied.body.detail.map((d: any) => d.fields[0].join("."))]).toEqual([400, [
      "body.plan.run_spec.configuration.gateway", "body.plan.run_spec.configuration.https"
    ]])
    const submitted = await call("/api/project/main/runs/submit", { run_spec: spec })
    expect(submitted.status).toBe(400)
    // The SDK shows the server's words; nothing was stored.
    const sdk = await client.runs.getPlan(await configurationOf("examples/service/.dstack.yml", { https: false }) as never).catch((e: Error) => e)
    expect(String((sdk as Error).message)).toMatch(/configuration\.https: `https: false` is not supported: the server is the gateway here/)
    expect((await call("/api/project/main/runs/get", { run_name: "web-refused" })).status).toBe(400)
  }, 60_000)

  // The scripts run as a reader runs them (`npx tsx …` / `deno run -A …`), configured by env.
  const runScript = (file: string, cwd?: string) =>
    new Promise<{ code: number | null; output: string }>((resolve) => {
      const command = RunnerCommand.forRuntime()(path.resolve(file), [])
      execFile(command.file, [...command.args], { cwd, env: clientEnv(), timeout: 90_000 }, (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, output: stdout + stderr }))
    })

  it("examples/sdk/submit.ts submits a task with the current directory as its code and follows its logs", async () => {
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-example-sdk-"))
    try {
      fs.writeFileSync(path.join(cwd, "train.py"), "print('training')\n")
      const { code, output } = await runScript("examples/sdk/submit.ts", cwd)
      expect(code, output).toBe(0)
      const name = /submitted (\S+)/.exec(output)?.[1]
      expect(name, output).toBeDefined()
      expect(output).toContain("train.py\n")
      expect(output).toContain("hello from the SDK\n")
      expect(output).toContain(`${name} done`)
    } finally {
      fs.rmSync(cwd, { recursive: true, force: true })
    }
  }, 120_000)

  const stacks = () => client.stacks({ codecs: [...dataframeCodecs, ...plotCodecs, ...modelCodecs] })
  const headOf = async (stack: string) => (await stacks().get(stack)).head_frame!.attachments

  it("examples/stacks/dataframe.ts pushes records, an Arrow table, CSV and Parquet and pulls each back", async () => {
    const { code, output } = await runScript("examples/stacks/dataframe.ts")
    expect(code, output).toBe(0)
    for (const name of ["records", "arrow", "csv", "parquet", "history"]) expect(output).toContain(`ok ${name}\n`)
    expect(output).not.toContain("MISMATCH")
    expect((await headOf("examples/sales"))[0]).toMatchObject({ application: "dataframe", content_type: expect.stringContaining("text/csv") })
    const weather = await headOf("examples/weather")
    expect(weather.map((a) => [a.params, a.content_type, (a.metadata as any).row_count])).toEqual([
      [{ format: "arrow" }, "application/vnd.apache.arrow.stream", 3],
      [{ format: "parquet" }, "application/vnd.apache.parquet", 3]
    ])
    expect((await stacks().get("examples/weather")).frames).toHaveLength(2)
  }, 120_000)

  it("examples/stacks/plot.ts pushes Vega-Lite, Plotly, SVG and PNG and pulls each back", async () => {
    const { code, output } = await runScript("examples/stacks/plot.ts")
    expect(code, output).toBe(0)
    for (const name of ["vega-lite", "plotly", "svg", "png"]) expect(output).toContain(`ok ${name}\n`)
    expect((await headOf("examples/revenue"))[0]).toMatchObject({ application: "plot", metadata: { kind: "vega-lite", mark: "bar", title: "Revenue by region" } })
    expect((await headOf("examples/loss"))[0]).toMatchObject({ content_type: "application/vnd.plotly.v1+json", metadata: { kind: "plotly", traces: 1 } })
    expect((await headOf("examples/revenue-images")).map((a) => [a.content_type, (a.metadata as any).width, (a.metadata as any).height])).toEqual([
      ["image/svg+xml", 120, 80],
      ["image/png", 60, 40]
    ])
  }, 120_000)

  it("examples/stacks/model.ts pushes ONNX and safetensors and pulls back Models", async () => {
    const { code, output } = await runScript("examples/stacks/model.ts")
    expect(code, output).toBe(0)
    for (const name of ["onnx", "safetensors"]) expect(output).toContain(`ok ${name}\n`)
    const [onnx, safetensors] = await headOf("examples/linear")
    expect(onnx).toMatchObject({
      content_type: "application/onnx",
      metadata: { graph_name: "linear", op_types: ["Add", "MatMul"], parameter_count: 4, inputs: [{ name: "x", shape: ["batch", 3] }] }
    })
    expect(safetensors).toMatchObject({ content_type: "application/vnd.safetensors", metadata: { tensor_count: 2, parameter_count: 4, framework: "pt" } })
  }, 120_000)

  it("the CLI commands of examples/stacks/README.md run as written and pull back the files pushed", async () => {
    // Every `npx dstack …` line of the README's CLI block, in a directory where `examples/` is
    // this repository's (so the paths are the README's and `-o` writes stay out of the tree).
    const readme = fs.readFileSync("examples/stacks/README.md", "utf8")
    const block = /## The same with the CLI[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)![1]
    const lines = block.split("\n").filter((l) => l.startsWith("npx dstack "))
    expect(lines.length).toBeGreaterThanOrEqual(8)
    const words = (line: string) =>
      [...line.replace(/\s+#.*$/, "").matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]).slice(2)
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-example-cli-"))
    fs.symlinkSync(path.resolve("examples"), path.join(cwd, "examples"))
    try {
      const entry = "Deno" in globalThis ? path.resolve("cli/src/main.ts") : CLI
      for (const line of lines) {
        const command = "Deno" in globalThis ? RunnerCommand.forRuntime()(entry, words(line)) : { file: process.execPath, args: [entry, ...words(line)] }
        const result = await new Promise<{ code: number; output: string }>((resolve) =>
          execFile(command.file, [...command.args], { cwd, env: clientEnv(), timeout: 60_000 }, (error, stdout, stderr) =>
            resolve({ code: error ? 1 : 0, output: stdout + stderr })))
        expect(result.code, `${line}\n${result.output}`).toBe(0)
      }
      const same = (pulled: string, original: string) =>
        expect(new Uint8Array(fs.readFileSync(path.join(cwd, pulled)))).toEqual(new Uint8Array(fs.readFileSync(path.join("examples/stacks/files", original))))
      same("sales.csv", "sales.csv")
      same("revenue-images.svg", "chart.svg")
      same("linear.onnx", "linear.onnx")
      expect((await stacks().get("examples/sales")).access).toBe("public")
    } finally {
      fs.rmSync(cwd, { recursive: true, force: true })
    }
  }, 180_000)
})
