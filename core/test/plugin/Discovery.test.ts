// Plugin discovery: marked packages found in node_modules folders from a project up, loaded by
// their entry, validated with the caller's own plugins; every way it can go wrong is named.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { Codec, definePlugin, PluginDiscovery } from "../../src/index.ts"

let root: string
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "dstack-discovery-"))
})
afterAll(async () => {
  await rm(root, { recursive: true, force: true })
})

/** Writes a package under `dir/node_modules/name` with the given package.json fields and entry source. */
const pkg = async (dir: string, name: string, fields: object, entry?: { file: string; source: string }) => {
  const at = join(dir, "node_modules", name)
  await mkdir(at, { recursive: true })
  await writeFile(join(at, "package.json"), JSON.stringify({ name, type: "module", ...fields }))
  if (entry) await writeFile(join(at, entry.file), entry.source)
  return at
}

/**
 * An entry module whose default export is a plugin contributing a codec `id`. It is plain
 * JavaScript with no imports, as a plugin built against another copy of core would be: the
 * brand is `Symbol.for("@dstack-ts/core/Plugin")` with the contract version, as definePlugin
 * writes it. (Vitest loads files under node_modules natively, where core's .ts cannot be imported.)
 */
const pluginSource = (name: string, version: string, id: string) => `
const never = () => { throw new Error("unused") }
const codec = { id: ${JSON.stringify(id)}, application: ${JSON.stringify(id.split("/")[0])}, contentTypes: ["application/x-test"], fileTypes: [],
  accepts: () => false, encode: never, decode: never, canDecode: () => false, sniff: () => false, fromFile: () => undefined }
export default Object.freeze({ [Symbol.for("@dstack-ts/core/Plugin")]: "v1", name: ${JSON.stringify(name)}, version: ${JSON.stringify(version)}, core: "^0.1.0", codecs: [codec] })
`

const project = async (name: string, packageJson: object = {}) => {
  const dir = join(root, name)
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, "package.json"), JSON.stringify({ name, private: true, ...packageJson }))
  return dir
}

const problems = async (effect: Effect.Effect<unknown, { problems: ReadonlyArray<{ reason: string; message: string }> }>) => {
  const result = await Effect.runPromise(Effect.either(effect))
  if (Either.isRight(result)) throw new Error("expected a PluginError")
  return result.left.problems
}

describe("PluginDiscovery", () => {
  it("finds marked packages (package.json key or keyword, scoped or not), reads exports conditions, and a nearer one shadows a farther one", async () => {
    const dir = await project("find")
    await pkg(dir, "@acme/by-key", { version: "1.0.0", "dstack-ts": { plugin: true }, exports: { ".": { types: "./x.d.ts", require: "./no.cjs", import: "./index.mjs" } } })
    await pkg(dir, "by-keyword", { version: "2.0.0", keywords: ["dstack-ts-plugin"], main: "main.mjs" })
    await pkg(dir, "not-a-plugin", { version: "1.0.0" })
    // The parent's node_modules: a farther copy of by-keyword (shadowed) and one more plugin.
    await pkg(root, "by-keyword", { version: "9.9.9", keywords: ["dstack-ts-plugin"] })
    await pkg(root, "farther", { version: "0.3.0", "dstack-ts": { plugin: true }, exports: "./f.mjs" })

    const found = await Effect.runPromise(PluginDiscovery.findPluginPackages({ from: dir }))
    const mine = found.filter((p) => ["@acme/by-key", "by-keyword", "farther"].includes(p.name))
    expect(mine.map((p) => [p.name, p.version, p.entry.slice(root.length)])).toEqual([
      ["@acme/by-key", "1.0.0", "/find/node_modules/@acme/by-key/index.mjs"],
      ["by-keyword", "2.0.0", "/find/node_modules/by-keyword/main.mjs"],
      ["farther", "0.3.0", "/node_modules/farther/f.mjs"]
    ])
    expect(found.some((p) => p.name === "not-a-plugin")).toBe(false)
    await rm(join(root, "node_modules"), { recursive: true, force: true })
  })

  it("loads discovered plugins with the caller's own; a discovered package replaces an included one of the same name", async () => {
    const dir = await project("load")
    await pkg(dir, "@acme/codec-a", { version: "1.2.0", "dstack-ts": { plugin: true }, exports: "./index.mjs" }, { file: "index.mjs", source: pluginSource("@acme/codec-a", "1.2.0", "a/one") })
    const bundled = definePlugin({ name: "@acme/codec-a", version: "1.0.0", core: "^0.1.0" })
    const other = definePlugin({ name: "@acme/other", version: "1.0.0", core: "^0.1.0", codecs: [] })
    const host = await Effect.runPromise(PluginDiscovery.load({ from: dir, include: [bundled, other] }))
    expect(host.plugins.map((p) => `${p.name}@${p.version}`)).toEqual(["@acme/other@1.0.0", "@acme/codec-a@1.2.0"])
    expect(host.codecs().map((c: Codec.Any) => c.id)).toEqual(["a/one"])
  })

  it("a discovered package at the version of an included plugin is that plugin: not imported again", async () => {
    const dir = await project("same-version")
    // Its entry could not load (as a workspace's TypeScript sources under plain Node): not imported.
    await pkg(dir, "@acme/codec-b", { version: "1.0.0", "dstack-ts": { plugin: true }, exports: "./index.mjs" }, { file: "index.mjs", source: "throw new Error('imported')" })
    const bundled = definePlugin({ name: "@acme/codec-b", version: "1.0.0", core: "^0.1.0", codecs: [] })
    const host = await Effect.runPromise(PluginDiscovery.load({ from: dir, include: [bundled] }))
    expect(host.plugins).toEqual([bundled])
    // Another version of it is the project's own, loaded (and here its failure reported).
    const older = definePlugin({ name: "@acme/codec-b", version: "0.9.0", core: "^0.1.0", codecs: [] })
    const found = await problems(PluginDiscovery.load({ from: dir, include: [older] }))
    expect(found.map((p) => p.message)).toEqual([expect.stringContaining("cannot load the plugin @acme/codec-b@1.0.0")])
  })

  it("two packages contributing one codec are a Conflict naming both packages and versions", async () => {
    const dir = await project("conflict")
    await pkg(dir, "@acme/x", { version: "1.0.0", "dstack-ts": { plugin: true }, exports: "./index.mjs" }, { file: "index.mjs", source: pluginSource("@acme/x", "1.0.0", "same/codec") })
    await pkg(dir, "@other/y", { version: "3.1.0", "dstack-ts": { plugin: true }, exports: "./index.mjs" }, { file: "index.mjs", source: pluginSource("@other/y", "3.1.0", "same/codec") })
    const found = await problems(PluginDiscovery.load({ from: dir }))
    expect(found.map((p) => p.reason)).toEqual(["Conflict"])
    expect(found[0].message).toBe('codec "same/codec" is contributed by both @acme/x@1.0.0 and @other/y@3.1.0: remove one of them')
  })

  it("an entry that fails to load, one without a default export, a misnamed plugin and no entry are all reported at once, each naming the package", async () => {
    const dir = await project("broken")
    await pkg(dir, "throws", { version: "1.0.0", "dstack-ts": { plugin: true }, main: "index.mjs" }, { file: "index.mjs", source: "throw new Error('kaput')" })
    await pkg(dir, "no-default", { version: "1.0.1", "dstack-ts": { plugin: true }, main: "index.mjs" }, { file: "index.mjs", source: "export const x = 1" })
    await pkg(dir, "misnamed", { version: "1.0.2", "dstack-ts": { plugin: true }, main: "index.mjs" }, { file: "index.mjs", source: pluginSource("@someone/else", "1.0.2", "m/x") })
    await pkg(dir, "cjs-only", { version: "1.0.3", "dstack-ts": { plugin: true }, exports: { require: "./index.cjs" } })
    const found = await problems(PluginDiscovery.load({ from: dir }))
    expect(found.every((p) => p.reason === "NotLoadable")).toBe(true)
    const text = found.map((p) => p.message).join("\n")
    expect(text).toContain('cjs-only@1.0.3')
    expect(text).toContain('exports no "." entry for import')
    const rest = await problems(PluginDiscovery.loadPluginPackages((await Effect.runPromise(PluginDiscovery.findPluginPackages({ from: join(root, "nothing-here") }))).concat([
      { name: "throws", version: "1.0.0", dir: join(dir, "node_modules/throws"), entry: join(dir, "node_modules/throws/index.mjs") },
      { name: "no-default", version: "1.0.1", dir: join(dir, "node_modules/no-default"), entry: join(dir, "node_modules/no-default/index.mjs") },
      { name: "misnamed", version: "1.0.2", dir: join(dir, "node_modules/misnamed"), entry: join(dir, "node_modules/misnamed/index.mjs") }
    ])))
    const messages = rest.map((p) => p.message).join("\n")
    expect(messages).toContain("cannot load the plugin throws@1.0.0")
    expect(messages).toContain("kaput")
    expect(messages).toContain("no-default@1.0.1 is marked as a dstack-ts plugin but")
    expect(messages).toContain("has no default export")
    expect(messages).toContain("misnamed@1.0.2 exports the plugin @someone/else@1.0.2: a plugin's name must be its package's name")
  })

  it("a project's dstack-ts.plugins list makes a missing or unmarked package an error", async () => {
    const dir = await project("required", { "dstack-ts": { plugins: ["@acme/present", "@acme/absent", "plain"] } })
    await pkg(dir, "@acme/present", { version: "1.0.0", "dstack-ts": { plugin: true }, exports: "./index.mjs" }, { file: "index.mjs", source: pluginSource("@acme/present", "1.0.0", "p/x") })
    await pkg(dir, "plain", { version: "1.0.0" })
    const found = await problems(PluginDiscovery.findPluginPackages({ from: dir }))
    expect(found.map((p) => p.message)).toEqual([
      '@acme/absent is listed in "dstack-ts.plugins" but is not installed (npm install @acme/absent)',
      'plain is listed in "dstack-ts.plugins" but its package.json does not mark it as a dstack-ts plugin ("dstack-ts": { "plugin": true })'
    ])
    const bad = await project("bad-list", { "dstack-ts": { plugins: "oops" } })
    expect((await problems(PluginDiscovery.findPluginPackages({ from: bad })))[0].message).toContain('"dstack-ts.plugins" must be a list of package names')
  })
})
