// The examples for people who extend dstack-ts, each exercised for real: the custom server build
// started as a child process and driven over HTTP, the Fake Cloud backend plugin planning and
// running a job in a createServer, and the GeoJSON codec plugin through its conformance suite
// and AutoHandler.
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { it as effectIt } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import {
  AnyConfiguration,
  AutoHandler,
  Backend,
  BlobStore,
  createServer,
  EmbeddedStateStore,
  loadConfiguration,
  offersForJob,
  PluginHost,
  Requirements,
  runOn,
  type Server
} from "@dstack-ts/core"
import { testBackend, testCodec } from "@dstack-ts/core/testing"
import { RunnerCommand } from "@dstack-ts/backend-local"
import fakeCloud, { makeFakeCloud } from "../../examples/custom-backend/fake-cloud.ts"
import geojsonPlugin, { geojson, type FeatureCollection } from "../../examples/custom-encoder/geojson.ts"
import { appCall, httpCall, type Call } from "../support/api.ts"

/** A configuration file as `dstack apply -f` reads it, encoded for the wire. */
const wireConfiguration = async (file: string, patch: Record<string, unknown> = {}) => {
  const configuration = await Effect.runPromise(loadConfiguration(path.resolve(file)))
  const wire: Record<string, unknown> = { ...(Schema.encodeSync(AnyConfiguration)(configuration) as Record<string, unknown>), ...patch }
  for (const key of Object.keys(wire)) if (wire[key] === undefined) delete wire[key]
  return wire
}

const runSpec = (configuration: unknown, runName?: string) => ({
  ...(runName === undefined ? {} : { run_name: runName }),
  repo_id: "examples",
  repo_data: { repo_type: "virtual" },
  configuration
})

const waitFinished = async (call: Call, name: string, timeoutMs = 90_000) => {
  const start = Date.now()
  let run: any
  while (Date.now() - start < timeoutMs) {
    run = (await call("/api/project/main/runs/get", { run_name: name })).body
    if (["done", "failed", "terminated"].includes(run.status)) return run
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`run ${name} did not finish within ${timeoutMs} ms: ${JSON.stringify(run)}`)
}

const logsOf = async (call: Call, name: string): Promise<string> =>
  (await call("/api/project/main/logs/poll", { run_name: name })).body.logs.map((l: any) => l.message).join("")

// ---------------------------------------------------------------------------------------------
// examples/custom-server: a real child process on a free port

describe("examples/custom-server", () => {
  let child: ChildProcess | undefined
  let output = ""
  let baseUrl = ""
  let token = ""
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-example-server-"))

  beforeAll(async () => {
    // The same command a reader types (`npx tsx …` / `deno run -A …`), for the runtime this runs on.
    const command = RunnerCommand.forRuntime()(path.resolve("examples/custom-server/server.ts"), [])
    const env: Record<string, string | undefined> = { ...process.env, DSTACK_SERVER_DIR: dir, DSTACK_SERVER_PORT: "0" }
    delete env.DSTACK_SERVER_ADMIN_TOKEN
    child = spawn(command.file, [...command.args], { env, stdio: ["ignore", "pipe", "pipe"] })
    child.stdout!.on("data", (d) => (output += String(d)))
    child.stderr!.on("data", (d) => (output += String(d)))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the server did not start in 90 s:\n${output}`)), 90_000)
      const check = () => {
        const url = /server on (http:\/\/127\.0\.0\.1:\d+)/.exec(output)
        const admin = /admin token: (\S+)/.exec(output)
        if (url && admin) {
          clearTimeout(timer)
          baseUrl = url[1]
          token = admin[1]
          resolve()
        }
      }
      child!.stdout!.on("data", check)
      child!.once("exit", (code) => {
        clearTimeout(timer)
        reject(new Error(`the server exited with ${code}:\n${output}`))
      })
    })
  }, 120_000)

  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child!.once("exit", resolve))
      child.kill("SIGTERM")
      const killer = setTimeout(() => child!.kill("SIGKILL"), 20_000)
      await exited
      clearTimeout(killer)
    }
    fs.rmSync(dir, { recursive: true, force: true })
  }, 30_000)

  it("prints the admin token once and runs examples/hello as a process over HTTP", async () => {
    expect(output.match(/admin token:/g)).toHaveLength(1)
    const call = httpCall(baseUrl, token)
    const configuration = await wireConfiguration("examples/hello/.dstack.yml")
    const applied = await call("/api/project/main/runs/apply", { plan: { run_spec: runSpec(configuration, "hello-custom-server") } })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    const run = await waitFinished(call, "hello-custom-server")
    expect(run.status, JSON.stringify(run.jobs[0].job_submissions)).toBe("done")
    expect(run.jobs[0].job_submissions[0].job_provisioning_data.backend).toBe("local")
    const logs = await logsOf(call, "hello-custom-server")
    expect(logs).toContain("Hello from dstack-ts")
    expect(logs).toContain("DSTACK_RUN_NAME=hello-custom-server")
    // Its state is where DSTACK_SERVER_DIR says.
    expect(fs.existsSync(path.join(dir, "data"))).toBe(true)
  }, 120_000)

  it("stops on SIGTERM", async () => {
    const exited = new Promise<string>((resolve) => child!.once("exit", (code, signal) => resolve(`${code} ${signal}`)))
    child!.kill("SIGTERM")
    const how = await exited
    // On Node its handler closes the server and exits 0. A deno child spawned from vitest under
    // Deno is reported as killed by the signal, though `deno run` in a shell exits 0 on SIGTERM
    // (checked by hand); there only the exit itself is asserted.
    if ("Deno" in globalThis) expect(how).toMatch(/^(0 null|null SIGTERM)$/)
    else expect(how).toBe("0 null")
  }, 30_000)
})

// ---------------------------------------------------------------------------------------------
// examples/custom-backend: the Fake Cloud plugin

const requirements = Schema.decodeUnknownSync(Requirements)({ resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } })

testBackend("examples/custom-backend fake-cloud", Layer.scoped(Backend.Backend, makeFakeCloud({})), { requirements })

describe("examples/custom-backend in a server", () => {
  const TOKEN = "examples-fake-cloud-token"
  let server: Server
  let call: Call

  beforeAll(async () => {
    server = await createServer({
      state: EmbeddedStateStore.layerMemory(),
      blobs: BlobStore.layerMemory,
      adminToken: TOKEN,
      plugins: [fakeCloud],
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
