// The TypeScript SDK in a real browser: the client is bundled for browsers (esbuild), served
// from another origin than the API, and driven in headless Chromium against a real server —
// cross-origin calls (CORS), authentication, and reading a finished run and its log.
import { build } from "esbuild"
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { serve } from "@hono/node-server"
import { afterAll, beforeAll, expect, it } from "vitest"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { describeWith } from "../support/components.ts"
import { makeInProcessPlugin } from "../support/inprocess-backend.ts"

const CHROMIUM = "/usr/bin/chromium"
const TOKEN = "browser-sdk-token"

describeWith("chromium", existsSync(CHROMIUM), `${CHROMIUM} is missing (apt-get install -y chromium)`, () => {
  let server: Server
  let api: ReturnType<typeof serve>
  let site: http.Server
  let apiUrl = ""
  let siteUrl = ""
  let bundleDir = ""
  let browser: import("playwright-core").Browser

  beforeAll(async () => {
    const inproc = makeInProcessPlugin()
    server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: TOKEN, plugins: [inproc.plugin], compute: { defaultBackends: [{ type: "inprocess" }] } })
    api = await new Promise((resolve) => {
      // Keep the runtime's own Response: the in-process runners in this process serve with it.
      const s = serve({ fetch: server.app.fetch, hostname: "127.0.0.1", port: 0, overrideGlobalObjects: false }, () => resolve(s))
    })
    apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}`
    // A finished run with a log, made through the API.
    await server.app.request("/api/project/main/runs/apply", {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ plan: { run_spec: { run_name: "from-node", repo_id: "b", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["echo seen in the browser"], resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } } } } })
    })
    let status = ""
    const started = Date.now()
    while (status !== "done" && Date.now() - started < 60_000) {
      const r = await server.app.request("/api/project/main/runs/get", { method: "POST", headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" }, body: JSON.stringify({ run_name: "from-node" }) })
      status = ((await r.json()) as any).status
      if (["failed", "terminated"].includes(status)) throw new Error(`the setup run ended ${status}`)
      if (status !== "done") await new Promise((res) => setTimeout(res, 50))
    }
    if (process.env.SDK_BROWSER_DEBUG) console.log(`setup run ${status} after ${Date.now() - started} ms`)
    if (status !== "done") throw new Error(`the setup run is still ${status} after 60 s`)
    bundleDir = mkdtempSync(join(tmpdir(), "dstack-sdk-browser-"))
    await build({ entryPoints: [join(process.cwd(), "client/src/index.ts")], bundle: true, splitting: true, format: "esm", platform: "browser", outdir: bundleDir, external: ["node:*"], logLevel: "silent" })
    // The page lives on another origin (another port) than the API.
    site = http.createServer((req, res) => {
      const file = req.url === "/" ? null : join(bundleDir, req.url!.slice(1))
      if (file === null) {
        res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><title>sdk</title>")
      } else if (existsSync(file)) {
        res.writeHead(200, { "content-type": "text/javascript" }).end(readFileSync(file))
      } else res.writeHead(404).end()
    })
    await new Promise<void>((r) => site.listen(0, "127.0.0.1", () => r()))
    siteUrl = `http://localhost:${(site.address() as AddressInfo).port}`
    const { chromium } = await import("playwright-core")
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"] })
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    ;(api as unknown as { closeAllConnections?: () => void })?.closeAllConnections?.()
    await new Promise<void>((r) => api?.close(() => r()))
    await new Promise<void>((r) => site?.close(() => r()))
    await server?.close()
    if (bundleDir) rmSync(bundleDir, { recursive: true, force: true })
  })

  it("calls the API cross-origin from a page: who am I, the runs, a finished run's log", async () => {
    const page = await browser.newPage()
    try {
      await page.goto(siteUrl)
      // A string, so that the test runner's transforms leave the page's own import() alone.
      const script = `(async () => {
        const { Client } = await import("/index.js")
        const client = Client.connect({ name: "main", url: ${JSON.stringify(apiUrl)}, token: ${JSON.stringify(TOKEN)} })
        const me = await client.users.getMyUser()
        const runs = await client.runs.list({ all: true })
        const run = await client.runs.get("from-node")
        let log = ""
        for await (const chunk of run.logs()) log += new TextDecoder().decode(chunk)
        const denied = await Client.connect({ name: "main", url: ${JSON.stringify(apiUrl)}, token: "wrong" }).users.getMyUser().catch((e) => e.reason)
        return { origin: location.origin, me: me.username, runs: runs.map((r) => r.name), status: run.status, log, denied }
      })()`
      page.on("console", (m) => process.env.SDK_BROWSER_DEBUG && console.log("page:", m.text()))
      page.on("requestfailed", (r) => process.env.SDK_BROWSER_DEBUG && console.log("failed:", r.url(), r.failure()?.errorText))
      page.on("response", (r) => process.env.SDK_BROWSER_DEBUG && console.log("response:", r.status(), r.url()))
      const result = (await page.evaluate(script)) as { origin: string; me: string; runs: Array<string>; status: string; log: string; denied: string }
      expect(result.origin).not.toBe(apiUrl)
      expect(result).toMatchObject({ me: "admin", runs: ["from-node"], status: "done", log: "seen in the browser\n", denied: "Unauthenticated" })
    } finally {
      await page.close()
    }
  }, 60_000)
})
