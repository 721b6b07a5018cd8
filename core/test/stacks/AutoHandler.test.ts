// AutoHandler: choosing a codec on push and on pull, explicit encoders, missing plugins.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { Layer } from "effect"
import { AutoHandler, Codec, definePlugin, PluginHost, StackContentTypes } from "../../src/index.ts"

const enc = new TextEncoder()

/** A stand-in plugin codec: strings that start with "#" are "markdown". */
const markdown = Codec.make<string>({
  id: "text/markdown",
  application: "text",
  contentTypes: ["text/markdown"],
  accepts: (o) => typeof o === "string" && o.startsWith("#"),
  encode: (s) => Effect.succeed({ contentType: "text/markdown", application: "text", metadata: { headings: 1 }, body: enc.encode(s) }),
  decode: (e) => Effect.map(Codec.bytes(e.body), (b) => `decoded:${new TextDecoder().decode(b)}`)
})

describe("AutoHandler", () => {
  const auto = AutoHandler.make([markdown])

  it.effect("picks the first accepting codec: plugin codecs before built-ins", () =>
    Effect.gen(function*() {
      expect((yield* auto.encode("# title")).codec).toBe("text/markdown")
      expect((yield* auto.encode("plain")).codec).toBe("text/plain")
      expect((yield* auto.encode({ a: 1 })).codec).toBe("json/value")
      expect((yield* auto.encode(new Uint8Array([1]))).codec).toBe("bytes/octet-stream")
      expect(Option.map(auto.encoderFor("# x"), (c) => c.id)).toEqual(Option.some("text/markdown"))
    }))

  it.effect("an explicit encoder wins over the choice and gets the caller's options", () =>
    Effect.gen(function*() {
      let seen: Codec.EncodeOptions | undefined
      const spy = Codec.make<string>({ ...markdown, id: "text/spy", accepts: () => true, encode: (s, o) => { seen = o; return markdown.encode(`#${s}`) } })
      const out = yield* auto.encode("plain", { encoder: spy, level: 3 })
      expect(out.codec).toBe("text/spy")
      expect(out.contentType).toBe("text/markdown")
      expect(seen).toEqual({ level: 3 })
    }))

  it.effect("decodes by content type, and an explicit decoder wins", () =>
    Effect.gen(function*() {
      const encoded = yield* auto.encode("# t")
      expect(yield* auto.decode(encoded)).toBe("decoded:# t")
      const plain = yield* auto.encode("abc")
      expect(yield* auto.decode(plain)).toBe("abc")
      // The built-in text decoder does not read text/markdown, so an explicit one must be able to.
      const viaText = yield* Effect.flip(auto.decode(encoded, { decoder: AutoHandler.make([]).codecs[1] }))
      expect(viaText.reason).toBe("Unsupported")
    }))

  it.effect("an object no codec accepts fails with Unsupported listing the installed codecs", () =>
    Effect.gen(function*() {
      const err = yield* Effect.flip(auto.encode(Symbol("s")))
      expect(err.reason).toBe("Unsupported")
      expect(err.message).toContain("a symbol")
      expect(err.message).toContain("text/markdown, bytes/octet-stream, text/plain, json/value")
    }))

  it.effect("a payload records the package of its codec, and a puller without it is told to install that package", () =>
    Effect.gen(function*() {
      const acme = definePlugin({ name: "@acme/handler-md", version: "2.1.0", core: "^0.1.0", codecs: [markdown] })
      const host = yield* PluginHost.make([acme])
      expect(host.codecs()[0].plugin).toBe("@acme/handler-md")
      const pushed = yield* AutoHandler.make(host.codecs()).encode("# notes")
      expect(pushed.metadata).toEqual({ headings: 1, plugin: "@acme/handler-md" })
      // A puller with the plugin decodes it; one without is told which package to install.
      expect(yield* AutoHandler.make(host.codecs()).decode(pushed)).toBe("decoded:# notes")
      const err = yield* Effect.flip(AutoHandler.make([]).decode(pushed))
      expect(err.reason).toBe("NotInstalled")
      expect(err.message).toBe("no installed codec decodes content type text/markdown (application text): install the plugin @acme/handler-md")
      // Core's built-ins name no package.
      expect((yield* AutoHandler.make([]).encode("plain")).metadata).not.toHaveProperty("plugin")
    }))

  it.effect("a codec that declares its package keeps it, and a payload that names one keeps its own", () =>
    Effect.gen(function*() {
      const declared = Codec.make<string>({ ...markdown, plugin: "@acme/own-name" })
      expect(Codec.contributedBy(declared, "@acme/bundle").plugin).toBe("@acme/own-name")
      const host = yield* PluginHost.make([definePlugin({ name: "@acme/bundle", version: "1.0.0", core: "^0.1.0", codecs: [declared] })])
      expect(host.codecs()[0].plugin).toBe("@acme/own-name")
      const naming = Codec.make<string>({
        ...markdown,
        plugin: "@acme/other",
        encode: (s) => Effect.succeed({ contentType: "text/markdown", application: "text", metadata: { plugin: "@acme/written" }, body: enc.encode(s) })
      })
      expect((yield* AutoHandler.make([naming]).encode("# x")).metadata.plugin).toBe("@acme/written")
    }))

  it.effect("a payload that names no package fails with NotInstalled in general terms, listing the installed codecs", () =>
    Effect.gen(function*() {
      for (const [contentType, application] of [[StackContentTypes.ContentType.arrowStream, "dataframe"], ["x/y", "z"]]) {
        const err = yield* Effect.flip(auto.decode({ contentType, application, metadata: {}, body: new Uint8Array([1]) }))
        expect(err.reason).toBe("NotInstalled")
        expect(err.message).toBe(
          `no installed codec decodes content type ${contentType} (application ${application}): install a plugin whose codec reads it; installed: text/markdown, bytes/octet-stream, text/plain, json/value`
        )
      }
    }))

  it.effect("without built-ins only the given codecs are used", () =>
    Effect.gen(function*() {
      const bare = AutoHandler.make([markdown], { builtins: false })
      expect(bare.codecs.map((c) => c.id)).toEqual(["text/markdown"])
      expect((yield* Effect.flip(bare.encode("plain"))).reason).toBe("Unsupported")
    }))

  it.effect("the layer reads the installed codecs from Codec.Codecs", () =>
    Effect.gen(function*() {
      const handler = yield* AutoHandler.AutoHandler
      expect(handler.codecs[0].id).toBe("text/markdown")
      expect((yield* handler.encode("# a")).codec).toBe("text/markdown")
    }).pipe(Effect.provide(AutoHandler.layer), Effect.provide(Codec.layer([markdown]))))

  it.effect("installed plugins' codecs reach the AutoHandler through the plugin host, in plugin order", () =>
    Effect.gen(function*() {
      const shout = Codec.make<string>({
        id: "text/shout",
        application: "text",
        contentTypes: ["text/x-shout"],
        accepts: (o) => typeof o === "string" && o.endsWith("!"),
        encode: (s) => Effect.succeed({ contentType: "text/x-shout", application: "text", metadata: {}, body: enc.encode(s) }),
        decode: (e) => Effect.map(Codec.bytes(e.body), (b) => new TextDecoder().decode(b))
      })
      const first = definePlugin({ name: "@acme/md", version: "1.0.0", core: "^0.1.0", codecs: [markdown] })
      const second = definePlugin({ name: "@acme/shout", version: "1.0.0", core: "^0.1.0", codecs: [shout] })
      const handler = yield* AutoHandler.AutoHandler.pipe(
        Effect.provide(AutoHandler.layer.pipe(
          Layer.provide(PluginHost.layerCodecs),
          Layer.provide(PluginHost.layer([first, second]))
        ))
      )
      expect(handler.codecs.map((c) => c.id)).toEqual(["text/markdown", "text/shout", "bytes/octet-stream", "text/plain", "json/value"])
      expect((yield* handler.encode("# hi!")).codec).toBe("text/markdown")
      expect((yield* handler.encode("hi!")).codec).toBe("text/shout")
    }))

  describe("forFile: a codec for a file from what the codecs declare", () => {
    const fileCodec = (id: string, fileTypes: ReadonlyArray<Codec.FileType>, accepts: (o: unknown) => boolean, sniff?: (h: Uint8Array) => boolean) =>
      Codec.make<Uint8Array>({
        id,
        application: "test",
        contentTypes: [`application/x-${id.replace("/", "-")}`],
        fileTypes,
        ...(sniff ? { sniff } : {}),
        accepts,
        encode: (b) => Effect.succeed({ contentType: `application/x-${id.replace("/", "-")}`, application: "test", metadata: {}, body: b }),
        decode: (e) => Codec.bytes(e.body)
      })
    const magicOnly = fileCodec("test/magic", [{ extensions: [".mg"], magic: [{ bytes: "MG" }] }], (o) => o instanceof Uint8Array && o[0] === 0x4d)
    const nameOnly = fileCodec("test/name", [{ extensions: [".mg", ".nm"] }], (o) => o instanceof Uint8Array)
    const picky = fileCodec("test/picky", [{ extensions: [".pk"] }], () => false, (h) => h[0] === 0x50)
    const auto = AutoHandler.make([nameOnly, magicOnly, picky])
    const id = (m: AutoHandler.FileMatch) => (m._tag === "Matched" ? `${m.codec.id} by ${m.by}` : `none; declined ${m.declined.map((d) => `${d.codec} by ${d.by}`).join(", ")}`)

    it("name and bytes together first, then bytes alone, then the name alone, each in priority order", () => {
      expect(id(auto.forFile("a.mg", enc.encode("MG1")))).toBe("test/magic by extension and content")
      expect(id(auto.forFile("a.bin", enc.encode("MG1")))).toBe("test/magic by content")
      expect(id(auto.forFile("a.nm", enc.encode("MG1")))).toBe("test/magic by content")
      expect(id(auto.forFile("a.nm", enc.encode("xx")))).toBe("test/name by extension")
      expect(id(auto.forFile("dir.mg/a.NM", enc.encode("xx")))).toBe("test/name by extension")
    })

    it("a codec whose accepts refuses what it read is passed over and named; the built-ins read .txt and .json", () => {
      expect(id(auto.forFile("a.pk", enc.encode("P...")))).toBe("none; declined test/picky by extension and content")
      expect(id(auto.forFile("a.bin", new Uint8Array([0, 1])))).toBe("none; declined ")
      const text = auto.forFile("notes.txt", enc.encode("\uFEFFhello"))
      expect(text._tag === "Matched" && text.codec.id).toBe("text/plain")
      expect(text._tag === "Matched" && text.object).toBe("\uFEFFhello")
      const json = auto.forFile("data.json", enc.encode('{"a":[1]}'))
      expect(json._tag === "Matched" && json.object).toEqual({ a: [1] })
      expect(id(auto.forFile("broken.json", enc.encode("{")))).toBe("none; declined json/value by extension")
      expect(id(auto.forFile("bad.txt", new Uint8Array([0xff])))).toBe("none; declined text/plain by extension")
    })

    it("extensionFor names a pulled file by the decoding codec's declared extension, else .bin", () => {
      expect(auto.extensionFor("application/x-test-name", "test")).toBe(".mg")
      expect(auto.extensionFor("text/plain; charset=utf-8", "text")).toBe(".txt")
      expect(auto.extensionFor("application/octet-stream", "bytes")).toBe(".bin")
      expect(auto.extensionFor("x/unknown", "nothing")).toBe(".bin")
    })
  })
})
