// The stack viewer's routes without a browser: plugin viewers listed in the page and served
// (script, assets, a failing asset, unknown names), core drawing nothing itself, and ?token=
// kept in an HttpOnly cookie (hono/cookie) that the read routes accept.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { definePlugin } from "../../../src/index.ts"
import { layerMemory as blobsMemory } from "../../../src/ports/BlobStore.ts"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { createServer, type Server } from "../../../src/server/createServer.ts"
import type { StackViewer } from "../../../src/stacks/StackViewer.ts"

const ADMIN = "viewer-admin"
const lib = new TextEncoder().encode("window.lib = 1")
const charts: StackViewer = {
  contentTypes: ["application/x-chart.*"],
  script: `dstackViewer.register("charts", function (ctx) { return Promise.resolve() })`,
  assets: {
    "lib.js": { contentType: "text/javascript", load: async () => lib },
    "broken.js": { contentType: "text/javascript", load: async () => { throw new Error("not installed here") } }
  }
}
const rows: StackViewer = { applications: ["rows"], script: `dstackViewer.register("rows", function () { return Promise.resolve() })` }
const plugin = definePlugin({ name: "@acme/viewers", version: "1.0.0", core: "^0.1.0", viewers: { charts, rows } })

let server: Server
const get = (path: string, headers: Record<string, string> = {}) => server.app.request(path, { headers })

beforeAll(async () => {
  server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN, plugins: [plugin] })
  const frame = await server.app.request("/api/stacks/frames/create", {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    body: JSON.stringify({ stack: "admin/v", access: "private", attachments: [{ content_type: "text/plain", application: "text" }] })
  })
  const { frame_id } = (await frame.json()) as { frame_id: string }
  await server.app.request(`/api/stacks/frames/${frame_id}/attachments/0`, { method: "PUT", headers: { authorization: `Bearer ${ADMIN}` }, body: "hi" })
  const commit = await server.app.request("/api/stacks/frames/commit", {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    body: JSON.stringify({ frame_id })
  })
  expect(commit.status).toBe(200)
}, 60_000)
afterAll(() => server?.close())

describe("stack viewer routes", () => {
  it("serve each plugin viewer's script and assets; unknown names, a missing asset and a failing one are errors naming them", async () => {
    const script = await get("/stacks-assets/viewers/charts/index.js")
    expect(script.status).toBe(200)
    expect(script.headers.get("content-type")).toContain("text/javascript")
    expect(await script.text()).toBe(charts.script)
    const asset = await get("/stacks-assets/viewers/charts/lib.js")
    expect(new Uint8Array(await asset.arrayBuffer())).toEqual(lib)
    expect(asset.headers.get("content-type")).toBe("text/javascript")

    const unknown = await get("/stacks-assets/viewers/nope/index.js")
    expect(unknown.status).toBe(404)
    expect(await unknown.text()).toContain("No installed plugin contributes the viewer nope")
    const missing = await get("/stacks-assets/viewers/rows/lib.js")
    expect(missing.status).toBe(404)
    expect(await missing.text()).toContain("The viewer rows has no asset lib.js")
    const inherited = await get("/stacks-assets/viewers/charts/toString")
    expect(inherited.status).toBe(404)
    const broken = await get("/stacks-assets/viewers/charts/broken.js")
    expect(broken.status).toBe(500)
    expect(await broken.text()).toContain("The viewer charts cannot load broken.js: not installed here")
    // Core's own assets are its script and stylesheet only: no plotting library.
    expect((await get("/stacks-assets/viewer.js")).status).toBe(200)
    expect((await get("/stacks-assets/vega.min.js")).status).toBe(404)
  })

  it("?token= sets an HttpOnly cookie and redirects without it; the page lists the installed viewers", async () => {
    const redirect = await get("/stacks/admin/v?token=" + ADMIN + "&frame=x")
    expect(redirect.status).toBe(303)
    expect(redirect.headers.get("location")).toBe("/stacks/admin/v?frame=x")
    const cookie = redirect.headers.get("set-cookie") ?? ""
    expect(cookie).toMatch(/^dstack_token=viewer-admin; /)
    expect(cookie).toContain("HttpOnly")
    expect(cookie).toContain("SameSite=Lax")
    expect(cookie).toContain("Path=/")

    expect((await get("/stacks/admin/v")).status).toBe(401)
    const page = await get("/stacks/admin/v", { cookie: "other=1; dstack_token=viewer-admin" })
    expect(page.status).toBe(200)
    const html = await page.text()
    const data = JSON.parse(/<script type="application\/json" id="stack-data">(.*?)<\/script>/s.exec(html)![1])
    expect(data.viewers).toEqual([
      { name: "charts", contentTypes: ["application/x-chart.*"], applications: [] },
      { name: "rows", contentTypes: [], applications: ["rows"] }
    ])
    expect(html).not.toMatch(/vega|plotly/i)
  })
})
