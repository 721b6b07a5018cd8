// docs/plugins.md's runnable examples, run as written: each ```ts block whose first line is
// `// runnable: NAME` is written to a module in this repository (so its imports resolve as in
// a plugin package) and imported while the tests are collected, so the conformance suites it
// calls register here. Its default export must be a plugin that a PluginHost accepts.
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, describe, expect, it } from "vitest"
import { Effect } from "effect"
import { PluginHost } from "@dstack-ts/core"

const root = fileURLToPath(new URL("../../", import.meta.url))
const doc = fs.readFileSync(path.join(root, "docs/plugins.md"), "utf8")
const blocks = [...doc.matchAll(/```ts\n\/\/ runnable: ([a-z0-9-]+)\n([\s\S]*?)```/g)].map((m) => ({ name: m[1], code: m[2] }))

// A directory beside this file, removed when the file's tests end.
const dir = fs.mkdtempSync(path.join(root, "test/docs/.plugins-snippets-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

const modules: Array<{ name: string; plugin: unknown }> = []
try {
  for (const block of blocks) {
    const file = path.join(dir, `${block.name}.ts`)
    fs.writeFileSync(file, `// From docs/plugins.md (runnable: ${block.name}).\n${block.code}`)
    modules.push({ name: block.name, plugin: ((await import(file)) as { default: unknown }).default })
  }
} catch (error) {
  fs.rmSync(dir, { recursive: true, force: true })
  throw error
}

describe("docs/plugins.md", () => {
  it("has a runnable example of a codec, a transport and a blob store", () => {
    expect(blocks.map((b) => b.name)).toEqual(["codec-lines", "transport-vpn", "blob-fs-lite"])
  })

  it("each example's default export is a plugin the host accepts", async () => {
    for (const { name, plugin } of modules) {
      expect(PluginHost.validate([plugin]), name).toEqual([])
    }
    const host = await Effect.runPromise(Effect.scoped(PluginHost.PluginHost.pipe(Effect.provide(PluginHost.layer(modules.map((m) => m.plugin))))))
    expect(host.codecs().map((c) => c.id)).toContain("text/lines")
    expect(host.transport("vpn")._tag).toBe("Some")
    expect(host.blobStore("fs-lite")._tag).toBe("Some")
  })
})
