// The packages as a third party gets them: `npm run build`, every workspace package `npm pack`ed
// (scripts/pack.ts), the tarballs installed into a fresh project outside the workspace, and there
// a custom server build with a third-party backend plugin and a third-party codec plugin (each a
// tiny JavaScript package of that project, written against the installed @dstack-ts/core), run
// with plain `node` and with `deno`; and the installed `dstack` command, with plain node.
// Needs the npm registry for third-party dependencies: skipped loudly without it, except under CI.
import { execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { packAll } from "../../scripts/pack.ts"
import { describeWith } from "../support/components.ts"

const exec = promisify(execFile)
const isDeno = "Deno" in globalThis
const DENO = path.resolve("node_modules/.bin/deno")
const TOKEN = "pack-test-admin-token"

/** The environment for npm and the built programs: this run's npm_* settings (workspace, prefix) left out. */
const cleanEnv = (extra: Record<string, string> = {}): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !/^npm_/i.test(k)) env[k] = v
  return { ...env, ...extra }
}

const registryUnreachable = async (): Promise<string | undefined> => {
  const registry = (await exec("npm", ["config", "get", "registry"], { env: cleanEnv() })).stdout.trim().replace(/\/?$/, "/")
  try {
    const response = await fetch(`${registry}effect`, { method: "HEAD", signal: AbortSignal.timeout(10_000) })
    return response.ok ? undefined : `${registry} answered HTTP ${response.status}`
  } catch (error) {
    return `${registry} is unreachable (${error instanceof Error ? error.message : String(error)})`
  }
}

/** A backend plugin of its own: one offer, `static-1` in `home`, that it never provisions. */
const staticHostsPlugin = `
import { Backend, definePlugin, InstanceDisk, InstanceOffer, InstanceResources, InstanceType } from "@dstack-ts/core"
import { Effect } from "effect"

const offer = new InstanceOffer({
  backend: "static-hosts",
  region: "home",
  price: 0.01,
  availability: "available",
  instance: new InstanceType({
    name: "static-1",
    resources: new InstanceResources({ cpus: 16, memoryMib: 65536, gpus: [], spot: false, disk: new InstanceDisk({ sizeMib: 1024 * 1024 }), description: "a host of the static list" })
  })
})

export default definePlugin({
  name: "acme-backend-static-hosts",
  version: "1.0.0",
  core: "^0.1.0",
  backends: {
    "static-hosts": () => Effect.succeed(Backend.make({
      type: "static-hosts",
      catalog: () => Effect.succeed([offer]),
      createInstance: () => Backend.fail("static-hosts", "createInstance", "NoCapacity", "this test never provisions"),
      terminateInstance: () => Effect.void
    }))
  }
})
`

/** A codec plugin of its own: NumPy-like arrays, tagged objects, as bytes. */
const npyPlugin = `
import { Codec, definePlugin } from "@dstack-ts/core"
import { Effect } from "effect"

export const npy = Codec.make({
  id: "npy/array",
  application: "npy",
  contentTypes: ["application/x-npy"],
  accepts: (value) => typeof value === "object" && value !== null && value.kind === "npy",
  encode: (value) => Effect.succeed({ contentType: "application/x-npy", application: "npy", metadata: { length: value.data.length }, body: new Uint8Array(value.data) }),
  decode: (encoded) => Effect.map(Codec.bytes(encoded.body), (bytes) => ({ kind: "npy", data: [...bytes] }))
})

export default definePlugin({ name: "acme-codec-npy", version: "1.0.0", core: "^0.1.0", codecs: [npy] })
`

/** The custom server build, as its README would show it, plus two lines the test reads. */
const serverBuild = `
import { createServer, PluginHost, runOn, serve } from "@dstack-ts/core"
import stateEmbedded from "@dstack-ts/state-embedded"
import blobUnstorage from "@dstack-ts/blob-unstorage"
import { Effect } from "effect"
import staticHosts from "acme-backend-static-hosts"
import npy from "acme-codec-npy"

const dir = process.env.DSTACK_SERVER_DIR
const server = await createServer({
  plugins: [stateEmbedded, blobUnstorage, staticHosts, npy],
  state: { driver: "embedded", options: { data_dir: dir + "/data" } },
  blobs: { driver: "fs", options: { base: dir + "/blobs" } },
  adminToken: "${TOKEN}",
  compute: { defaultBackends: [{ type: "static-hosts" }] }
})
const codecs = await runOn(server, Effect.map(PluginHost.PluginHost, (host) => host.codecs().map((codec) => codec.id)))
const { url } = await serve(server, { port: 0 })
console.log("codecs: " + codecs.join(","))
console.log("listening on " + url)
`

const tinyPackage = (dir: string, name: string, source: string) => {
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, "index.js"), source)
  fs.writeFileSync(
    path.join(dir, "package.json"),
    JSON.stringify({ name, version: "1.0.0", type: "module", exports: "./index.js", peerDependencies: { "@dstack-ts/core": "^0.1.0", effect: "^3.0.0" } }, null, 2)
  )
}

interface Started {
  readonly url: string
  readonly output: () => string
  readonly stop: () => Promise<string>
}

/** Starts `file args` in `cwd` and waits for its "listening on" line. */
const start = (file: string, args: ReadonlyArray<string>, cwd: string, dataDir: string): Promise<Started> =>
  new Promise((resolve, reject) => {
    const child = spawn(file, [...args], { cwd, env: cleanEnv({ DSTACK_SERVER_DIR: dataDir }), stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    const exited = new Promise<string>((done) => child.once("exit", (code, signal) => done(`${code} ${signal}`)))
    const timer = setTimeout(() => reject(new Error(`${file} ${args.join(" ")} did not listen in 120 s:\n${output}`)), 120_000)
    const onData = (d: Buffer) => {
      output += String(d)
      const m = /listening on (http:\/\/\S+)/.exec(output)
      if (m !== null) {
        clearTimeout(timer)
        resolve({
          url: m[1],
          output: () => output,
          stop: async () => {
            child.kill("SIGTERM")
            const killer = setTimeout(() => child.kill("SIGKILL"), 20_000)
            const how = await exited
            clearTimeout(killer)
            return how
          }
        })
      }
    }
    child.stdout.on("data", onData)
    child.stderr.on("data", onData)
    void exited.then((how) => {
      clearTimeout(timer)
      reject(new Error(`${file} ${args.join(" ")} exited (${how}) before listening:\n${output}`))
    })
  })

/** One API call: every route is a POST of JSON. */
const call = async (base: string, route: string, body: unknown = {}) => {
  const response = await fetch(`${base}${route}`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify(body)
  })
  return { status: response.status, body: (await response.json()) as any }
}

const planRequest = {
  run_spec: { repo_id: "pack-test", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["echo hi"] } }
}

/** What each runtime must show: get_info, the static-hosts offer in a plan, a clean exit on SIGTERM. */
const checkServer = async (server: Started) => {
  expect(server.output()).toMatch(/codecs: .*npy\/array/)
  const info = await call(server.url, "/api/server/get_info")
  expect(info.status).toBe(200)
  expect(info.body.server_version).toBe(JSON.parse(fs.readFileSync("core/package.json", "utf8")).version)
  const plan = await call(server.url, "/api/project/main/runs/get_plan", planRequest)
  expect(plan.status, JSON.stringify(plan.body)).toBe(200)
  const offers = plan.body.job_plans[0].offers.map((o: any) => `${o.backend} ${o.region} ${o.instance.name}`)
  expect(offers).toEqual(["static-hosts home static-1"])
}

const reachable = isDeno ? undefined : await registryUnreachable()

// The harness runs once, on Node: it starts both runtimes itself.
describe.skipIf(isDeno)("packages installed from their tarballs (on Node only: it starts node and deno itself)", () => {
  describeWith("npm registry", reachable === undefined, reachable ?? "", () => {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-pack-test-"))
    const project = path.join(work, "project")

    beforeAll(async () => {
      const tarballs = await packAll(path.join(work, "tarballs"))
      expect(tarballs.map((t) => path.basename(t)).sort()).toContain("dstack-ts-core-" + JSON.parse(fs.readFileSync("core/package.json", "utf8")).version + ".tgz")
      fs.mkdirSync(project, { recursive: true })
      tinyPackage(path.join(project, "plugins", "backend-static-hosts"), "acme-backend-static-hosts", staticHostsPlugin)
      tinyPackage(path.join(project, "plugins", "codec-npy"), "acme-codec-npy", npyPlugin)
      fs.writeFileSync(path.join(project, "server.mjs"), serverBuild)
      const dependencies: Record<string, string> = {
        "acme-backend-static-hosts": "file:./plugins/backend-static-hosts",
        "acme-codec-npy": "file:./plugins/codec-npy"
      }
      for (const tarball of tarballs) {
        const { name } = JSON.parse((await exec("tar", ["-xzOf", tarball, "package/package.json"])).stdout)
        dependencies[name] = `file:${tarball}`
      }
      fs.writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: "custom-build", private: true, type: "module", dependencies }, null, 2))
      // The user's npm cache is shared with the workspace's install: most packages come from it.
      await exec("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: project, env: cleanEnv(), maxBuffer: 64 * 1024 * 1024 })
    }, 900_000)

    afterAll(() => fs.rmSync(work, { recursive: true, force: true }))

    it("installs packages whose exports are built JavaScript with declarations", () => {
      const core = JSON.parse(fs.readFileSync(path.join(project, "node_modules/@dstack-ts/core/package.json"), "utf8"))
      expect(core.exports["."]).toEqual({ types: "./dist/index.d.ts", default: "./dist/index.js" })
      expect(fs.existsSync(path.join(project, "node_modules/@dstack-ts/core/dist/index.d.ts"))).toBe(true)
      expect(fs.existsSync(path.join(project, "node_modules/@dstack-ts/core/dist/testing/index.js"))).toBe(true)
    })

    it("runs the custom build with plain node: API, the plugin's offer in a plan, the codec, SIGTERM", async () => {
      const server = await start(process.execPath, ["server.mjs"], project, path.join(work, "node-data"))
      try {
        await checkServer(server)
      } finally {
        expect(await server.stop(), server.output()).toBe("0 null")
      }
    }, 180_000)

    it("runs the same build with deno", async () => {
      const server = await start(DENO, ["run", "-A", "server.mjs"], project, path.join(work, "deno-data"))
      try {
        await checkServer(server)
      } finally {
        expect(await server.stop(), server.output()).toBe("0 null")
      }
    }, 180_000)

    it("runs the installed dstack command with plain node", async () => {
      const { stdout } = await exec(process.execPath, [path.join(project, "node_modules/.bin/dstack"), "--help"], { cwd: project, env: cleanEnv() })
      expect(stdout).toContain("USAGE dstack")
      expect(stdout).toContain("server")
    }, 60_000)
  })
})
