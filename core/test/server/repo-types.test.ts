// Plan and apply refuse a run whose code is of a repo type that no built-in and no installed
// plugin (`repos`) handles, naming the type and what this server does handle; a plugin's type
// and the built-in ones pass.
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { definePlugin } from "../../src/plugin/Plugin.ts"
import { layerMemory as blobsMemory } from "../../src/ports/BlobStore.ts"
import type { Repo } from "../../src/ports/Repo.ts"
import { createServer } from "../../src/server/createServer.ts"
import type { Server } from "../../src/server/createServer.ts"

const ADMIN = "admin-token-for-repo-type-tests"

/** A stand-in repo type contributed by a plugin: nothing to pack, nothing to write. */
const archiveUrl: Repo = {
  type: "archive-url",
  pack: () => Effect.succeed({ repoData: { repoType: "archive-url", url: "https://example.com/a.tgz" } as never, codeHash: "", archive: new Uint8Array() }),
  materialize: () => Effect.void
}
const repoPlugin = definePlugin({ name: "@acme/repo-archive-url", version: "1.4.0", core: "^0.1.0", repos: { "archive-url": archiveUrl } })

let server: Server
beforeAll(async () => {
  server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN, plugins: [repoPlugin] })
}, 120_000)
afterAll(() => server?.close())

const call = async (path: string, body: unknown) => {
  const res = await server.app.request(path, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    body: JSON.stringify(body)
  })
  return { status: res.status, body: (await res.json()) as any }
}

const spec = (name: string, repoData: Record<string, unknown>) => ({
  run_name: name,
  repo_id: "r",
  repo_data: repoData,
  configuration: { type: "task", commands: ["true"] }
})

const refusal = (type: string) =>
  `repo_type "${type}" is not handled by any installed plugin; this server handles: local (built in), remote (built in), virtual (built in), archive-url (@acme/repo-archive-url@1.4.0). Install the plugin that contributes the "${type}" repo type in the server build`

describe("runs: repo types nothing handles", () => {
  it("get_plan refuses an unknown repo type with 400 at repo_data.repo_type, naming it and the installed types", async () => {
    const res = await call("/api/project/main/runs/get_plan", { run_spec: spec("p1", { repo_type: "s3-bucket", bucket: "b" }) })
    expect(res.status).toBe(400)
    expect(res.body.detail).toEqual([
      { msg: refusal("s3-bucket"), code: "error", fields: [["body", "run_spec", "repo_data", "repo_type"]] }
    ])
  })

  it("apply and submit refuse it too, and store no run", async () => {
    const applied = await call("/api/project/main/runs/apply", { plan: { run_spec: spec("a1", { repo_type: "s3-bucket" }) }, force: false })
    expect(applied.status).toBe(400)
    expect(applied.body.detail[0].fields).toEqual([["body", "plan", "run_spec", "repo_data", "repo_type"]])
    expect(applied.body.detail[0].msg).toBe(refusal("s3-bucket"))
    const submitted = await call("/api/project/main/runs/submit", { run_spec: spec("a2", { repo_type: "s3-bucket" }) })
    expect(submitted.status).toBe(400)
    expect(submitted.body.detail[0].fields).toEqual([["body", "run_spec", "repo_data", "repo_type"]])
    for (const name of ["a1", "a2"]) expect((await call("/api/project/main/runs/get", { run_name: name })).status).toBe(400)
  })

  it("quotes at most a short prefix of a long type", async () => {
    const long = "x".repeat(5000)
    const res = await call("/api/project/main/runs/get_plan", { run_spec: spec("p2", { repo_type: long }) })
    expect(res.status).toBe(400)
    expect(res.body.detail[0].msg.length).toBeLessThan(600)
    expect(res.body.detail[0].msg).toContain("(5,000 characters)")
  })

  it("plans and applies a plugin's repo type and the built-in ones", async () => {
    const plan = await call("/api/project/main/runs/get_plan", { run_spec: spec("ok1", { repo_type: "archive-url", url: "https://example.com/a.tgz" }) })
    expect(plan.status).toBe(200)
    expect(plan.body.run_spec.repo_data).toEqual({ repo_type: "archive-url", url: "https://example.com/a.tgz" })
    const applied = await call("/api/project/main/runs/apply", { plan: { run_spec: spec("ok1", { repo_type: "archive-url", url: "u" }) } })
    expect(applied.status).toBe(200)
    expect(applied.body.run_spec.repo_data.repo_type).toBe("archive-url")
    for (const repoData of [{ repo_type: "virtual" }, { repo_type: "local" }, { repo_type: "remote", repo_url: "https://example.com/r.git" }]) {
      expect((await call("/api/project/main/runs/get_plan", { run_spec: spec("ok2", repoData) })).status).toBe(200)
    }
  })
})

describe("runs: a server without repo plugins", () => {
  it("lists only the built-in types", async () => {
    const bare = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN })
    try {
      const res = await bare.app.request("/api/project/main/runs/get_plan", {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
        body: JSON.stringify({ run_spec: spec("b1", { repo_type: "archive-url" }) })
      })
      expect(res.status).toBe(400)
      expect(((await res.json()) as any).detail[0].msg).toContain("this server handles: local (built in), remote (built in), virtual (built in). Install")
    } finally {
      await bare.close()
    }
  }, 120_000)
})
