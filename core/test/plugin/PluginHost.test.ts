// The plugin contract and host: every refusal on its own, the combined report, the lookups,
// and the core version read from core/package.json.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Option, Schema, Stream } from "effect"
import pkg from "../../package.json" with { type: "json" }
import * as Core from "../../src/index.ts"
import { CORE_VERSION, definePlugin, isPlugin, PluginError, PluginHost, PluginTypeId } from "../../src/plugin/index.ts"
import * as Backend from "../../src/ports/Backend.ts"
import * as BlobStore from "../../src/ports/BlobStore.ts"
import * as Codec from "../../src/ports/Codec.ts"
import * as Provider from "../../src/ports/Provider.ts"
import * as Repo from "../../src/ports/Repo.ts"

const backendFactory = () => Effect.succeed(Backend.make({
  type: "foo",
  catalog: () => Effect.succeed([]),
  createInstance: () => Backend.fail("foo", "createInstance", "NoCapacity", "none"),
  terminateInstance: () => Effect.void
}))

const textCodec = Codec.make<string>({
  id: "text/plain",
  application: "text",
  contentTypes: ["text/plain"],
  accepts: (o) => typeof o === "string",
  encode: (s) => Effect.succeed({ contentType: "text/plain", application: "text", metadata: {}, body: new TextEncoder().encode(s) }),
  decode: (e) => Effect.map(Codec.bytes(e.body), (b) => new TextDecoder().decode(b))
})

const plugin = (name: string, version: string, extra: Partial<Parameters<typeof definePlugin>[0]> = {}) =>
  definePlugin({ name, version, core: "^0.1.0", ...extra })

const problemsOf = (plugins: ReadonlyArray<unknown>, coreVersion = "0.1.0") =>
  Effect.map(Effect.flip(PluginHost.make(plugins, { coreVersion })), (e) => {
    expect(e).toBeInstanceOf(PluginError)
    return e.problems
  })

describe("CORE_VERSION", () => {
  it("comes from core/package.json, also through the package root", () => {
    expect(CORE_VERSION).toBe(pkg.version)
    expect(Core.CORE_VERSION).toBe(pkg.version)
    expect(CORE_VERSION).toMatch(/^\d+\.\d+\.\d+/)
  })
})

describe("definePlugin", () => {
  it("returns a branded, frozen descriptor whose contribution maps are frozen copies", () => {
    const backends = { foo: backendFactory }
    const p = plugin("@acme/backend-foo", "1.0.0", { backends, codecs: [textCodec] })
    expect(isPlugin(p)).toBe(true)
    expect(p[PluginTypeId]).toBe("v1")
    expect(Object.isFrozen(p)).toBe(true)
    expect(Object.isFrozen(p.backends)).toBe(true)
    expect(Object.isFrozen(p.codecs)).toBe(true)
    expect(() => {
      ;(p as { name: string }).name = "other"
    }).toThrow(TypeError)
    backends.foo = undefined as never
    expect(typeof p.backends!.foo).toBe("function")
    expect(isPlugin({ name: "x", version: "1.0.0", core: "*" })).toBe(false)
  })
})

describe("PluginHost", () => {
  it.effect("accepts good plugins and answers lookups", () =>
    Effect.gen(function*() {
      const blobLayer = () => BlobStore.layerMemory
      const host = yield* PluginHost.make([
        plugin("@acme/backend-foo", "1.2.3", { backends: { foo: backendFactory }, blobStores: { mem: blobLayer } }),
        plugin("@acme/codecs", "0.3.0", { codecs: [textCodec], description: "text" })
      ])
      expect(host.coreVersion).toBe(CORE_VERSION)
      expect(host.plugins.map((p) => p.name)).toEqual(["@acme/backend-foo", "@acme/codecs"])
      expect(Option.getOrNull(host.backend("foo"))).toBe(backendFactory)
      expect(Option.isNone(host.backend("aws"))).toBe(true)
      expect(Option.getOrNull(host.blobStore("mem"))).toBe(blobLayer)
      expect(Option.isNone(host.transport("ssh"))).toBe(true)
      expect(host.codecs().map((c) => c.id)).toEqual([textCodec.id])
      expect(host.codecs()[0].plugin).toBe(host.contributions("codecs")[0].plugin.name)
      expect(host.contributions("backends")).toEqual([
        { kind: "backends", key: "foo", value: backendFactory, plugin: { name: "@acme/backend-foo", version: "1.2.3" } }
      ])
      const backend = yield* Effect.scoped(Option.getOrThrow(host.backend("foo"))({}))
      expect(backend.type).toBe("foo")
    }))

  it.effect("provides Codecs from the host's plugins", () =>
    Effect.gen(function*() {
      const codecs = yield* Codec.Codecs
      expect(codecs.map((c) => c.id)).toEqual(["text/plain"])
    }).pipe(
      Effect.provide(PluginHost.layerCodecs),
      Effect.provide(PluginHost.layer([plugin("@acme/codecs", "1.0.0", { codecs: [textCodec] })]))
    ))

  it.effect("provides Providers and Repos from the host's plugins", () =>
    Effect.gen(function*() {
      const bash = Provider.make({
        name: "bash",
        parameters: Schema.Struct({ commands: Schema.Array(Schema.String) }),
        createJobs: (p) => Effect.succeed([{ commands: p.commands }])
      })
      const program = Effect.gen(function*() {
        const provider = yield* Provider.lookup("bash")
        const repos = yield* Repo.Repos
        return [provider.name, [...repos.keys()]] as const
      })
      const result = yield* program.pipe(
        Effect.provide(Layer.mergeAll(PluginHost.layerProviders, PluginHost.layerRepos)),
        Effect.provide(PluginHost.layer([plugin("@acme/basics", "1.0.0", { providers: { bash }, repos: { virtual: Repo.virtual } })]))
      )
      expect(result).toEqual(["bash", ["virtual"]])
    }))

  it.effect("refuses a plain object that only looks like a plugin", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf([{ name: "@acme/fake", version: "1.0.0", core: "^0.1.0" }, 42])
      expect(problems.map((p) => p.reason)).toEqual(["NotAPlugin", "NotAPlugin"])
      expect(problems[0].plugin).toBe("@acme/fake")
      expect(problems[0].message).toContain("plugin #1 (@acme/fake@1.0.0) is not a plugin descriptor")
      expect(problems[1].message).toContain("plugin #2 ((unnamed plugin))")
    }))

  it.effect("refuses a descriptor of another contract version", () =>
    Effect.gen(function*() {
      const future = { ...plugin("@acme/next", "3.0.0"), [PluginTypeId]: "v2" }
      const [problem] = yield* problemsOf([future])
      expect(problem.reason).toBe("UnsupportedContract")
      expect(problem.message).toBe("@acme/next@3.0.0 uses plugin contract \"v2\", but this host (core 0.1.0) understands v1")
    }))

  it.effect("refuses bad names, versions and core ranges", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf([
        plugin("Not A Package", "1.0.0"),
        plugin("@acme/ver", "1.x"),
        plugin("@acme/range", "1.0.0", { core: "not a range" })
      ])
      expect(problems.map((p) => [p.reason, p.message])).toEqual([
        ["InvalidName", "plugin #1 has name \"Not A Package\", which is not a valid npm package name"],
        ["InvalidVersion", "@acme/ver@1.x has version \"1.x\", which is not a semver version (like 1.2.3)"],
        ["InvalidCoreRange", "@acme/range@1.0.0 gives core range \"not a range\", which is not a semver range (like ^0.1.0)"]
      ])
    }))

  it.effect("refuses a plugin whose core range excludes the host's core, naming both versions", () =>
    Effect.gen(function*() {
      const [problem] = yield* problemsOf([plugin("@acme/backend-foo", "2.0.0", { core: "^2.0.0" })])
      expect(problem.reason).toBe("IncompatibleCore")
      expect(problem.plugin).toBe("@acme/backend-foo")
      expect(problem.message).toBe("@acme/backend-foo@2.0.0 requires @dstack-ts/core ^2.0.0, but this host runs core 0.1.0")
      // The same plugin is fine on a host that runs a matching core.
      const host = yield* PluginHost.make([plugin("@acme/backend-foo", "2.0.0", { core: "^2.0.0" })], { coreVersion: "2.3.0" })
      expect(host.plugins).toHaveLength(1)
    }))

  it.effect("checks the range against the real core version by default", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(PluginHost.make([plugin("@acme/old", "1.0.0", { core: "<0.0.1" })]))
      expect(e.problems[0].message).toBe(`@acme/old@1.0.0 requires @dstack-ts/core <0.0.1, but this host runs core ${pkg.version}`)
    }))

  it.effect("refuses the same plugin twice, naming both versions", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf([
        plugin("@acme/backend-foo", "1.0.0", { backends: { foo: backendFactory } }),
        plugin("@acme/backend-foo", "1.2.0", { backends: { foo: backendFactory } })
      ])
      expect(problems.map((p) => [p.reason, p.message])).toEqual([
        ["Duplicate", "@acme/backend-foo is installed twice (versions 1.0.0 and 1.2.0): keep one"]
      ])
    }))

  it.effect("refuses two plugins contributing the same key, naming both plugins and versions", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf([
        plugin("@a/aws", "1.0.0", { backends: { aws: backendFactory } }),
        plugin("@b/aws", "3.1.0", { backends: { aws: backendFactory }, codecs: [textCodec] }),
        plugin("@c/text", "0.1.0", { codecs: [textCodec] })
      ])
      expect(problems.map((p) => [p.reason, p.plugin, p.message])).toEqual([
        ["Conflict", "@b/aws", "backend \"aws\" is contributed by both @a/aws@1.0.0 and @b/aws@3.1.0: remove one of them"],
        ["Conflict", "@c/text", "codec \"text/plain\" is contributed by both @b/aws@3.1.0 and @c/text@0.1.0: remove one of them"]
      ])
    }))

  it.effect("refuses contributions of the wrong shape or with bad names", () =>
    Effect.gen(function*() {
      const problems = yield* problemsOf([
        plugin("@acme/bad", "1.0.0", {
          backends: { foo: "not a function" as never, "Bad Name": backendFactory },
          providers: { bash: {} as never },
          codecs: {} as never
        })
      ])
      expect(problems.map((p) => p.message)).toEqual([
        "@acme/bad@1.0.0 contributes backend \"foo\" that is not a function from the backend's config to an Effect of a Backend",
        "@acme/bad@1.0.0 contributes backend \"Bad Name\": the name must be lowercase letters, digits, '.', '_', '-' or '/'",
        "@acme/bad@1.0.0 gives codecs as object, expected an array of codecs",
        "@acme/bad@1.0.0 contributes provider \"bash\" that is not a Provider (with createJobs)"
      ])
    }))

  it.effect("reports every problem at once in one PluginError", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(PluginHost.make([
        plugin("@acme/backend-foo", "2.0.0", { core: "^2.0.0", backends: { aws: backendFactory } }),
        { name: "@acme/fake" },
        plugin("@acme/twice", "1.0.0"),
        plugin("@acme/twice", "1.1.0"),
        plugin("@other/aws", "0.9.0", { backends: { aws: backendFactory } })
      ], { coreVersion: "0.1.0" }))
      expect(error._tag).toBe("PluginError")
      expect(error.problems.map((p) => p.reason)).toEqual(["IncompatibleCore", "NotAPlugin", "Duplicate", "Conflict"])
      expect(error.message).toBe([
        "4 plugin problems:",
        "  - @acme/backend-foo@2.0.0 requires @dstack-ts/core ^2.0.0, but this host runs core 0.1.0",
        "  - plugin #2 (@acme/fake) is not a plugin descriptor: export the result of definePlugin(...) from @dstack-ts/core",
        "  - @acme/twice is installed twice (versions 1.0.0 and 1.1.0): keep one",
        "  - backend \"aws\" is contributed by both @acme/backend-foo@2.0.0 and @other/aws@0.9.0: remove one of them"
      ].join("\n"))
      // The layer fails with the same error.
      const viaLayer = yield* Effect.either(Effect.provide(PluginHost.PluginHost, PluginHost.layer([{ name: "x" }])))
      expect(Either.isLeft(viaLayer) && viaLayer.left.problems[0].reason).toBe("NotAPlugin")
    }))

  it.effect("an empty plugin list is a valid (bare) build", () =>
    Effect.gen(function*() {
      const host = yield* PluginHost.make([])
      expect(host.codecs()).toEqual([])
      expect(yield* Stream.runCollect(Stream.fromIterable(host.contributions("providers")))).toHaveLength(0)
    }))
})
