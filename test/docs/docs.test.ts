// The docs stay true: docs/api.md is generated from the OpenAPI document that a server serves
// (and must be regenerated when a route's schema changes), every relative link in README.md
// and docs/ points at a file that exists, every doc is linked from the README and from
// docs/examples.md, every example directory is described and named by a test, and what the
// configuration refuses is listed where users look (README, configuration.md, the examples).
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Schema } from "effect"
import { parse as parseYaml } from "yaml"
import { AnyConfiguration, BlobStore, createServer, ROADMAP, type Server, UNSUPPORTED_RULES, unsupportedKeys } from "@dstack-ts/core"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { renderApiDocs, serverDocument } from "../../scripts/gen-api-docs.ts"

const root = fileURLToPath(new URL("../../", import.meta.url))
const read = (file: string) => readFileSync(path.join(root, file), "utf8")
const docs = readdirSync(path.join(root, "docs")).filter((f) => f.endsWith(".md")).sort()

describe("docs/api.md", () => {
  let server: Server
  beforeAll(async () => {
    server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: BlobStore.layerMemory, adminToken: "docs-test-token" })
  }, 60_000)
  afterAll(async () => {
    await server?.close()
  })

  it("is up to date with the routes' schemas (run: npx tsx scripts/gen-api-docs.ts)", () => {
    expect(read("docs/api.md"), "docs/api.md is stale: run `npx tsx scripts/gen-api-docs.ts`").toBe(renderApiDocs())
  })

  it("is generated from the same document a server serves at /api/docs", async () => {
    const served = (await (await server.app.request("/api/docs")).json()) as Record<string, any>
    expect(serverDocument().paths).toEqual(served.paths)
    expect(serverDocument().components).toEqual(served.components)
  })

  it("documents every route with its method, auth, request and response", () => {
    const text = read("docs/api.md")
    for (const route of server.routes) {
      const heading = `### \`${route.method} ${route.path.replace(/:([A-Za-z_]+)/g, "{$1}")}\``
      expect(text, heading).toContain(heading)
      const section = text.slice(text.indexOf(heading)).split("\n### ")[0]
      for (const part of ["- **Auth**: ", "- **Errors**: ", "**Request**: ", "**Response** (`200`): "]) expect(section, `${heading} ${part}`).toContain(part)
    }
    // Request fields of a well-known route, with their types and whether they are required.
    expect(text).toContain("| `run_spec.configuration` | [AnyRunConfiguration](#schema-anyrunconfiguration) | yes |")
    expect(text).toContain("| `detail[].code` | `\"invalid_request\"`")
  })

  it("links resolve: every [text](#anchor) in it names a heading or an anchor of the page", () => {
    const text = read("docs/api.md")
    const slug = (heading: string) => heading.toLowerCase().replace(/[^a-z0-9 _-]/g, "").replace(/ /g, "-")
    const anchors = new Set([
      ...[...text.matchAll(/^#+ (.*)$/gm)].map((m) => slug(m[1].replace(/<a id="[^"]*"><\/a>/, ""))),
      ...[...text.matchAll(/<a id="([^"]+)">/g)].map((m) => m[1])
    ])
    const missing = [...text.matchAll(/\]\(#([^)]+)\)/g)].map((m) => m[1]).filter((a) => !anchors.has(a))
    expect([...new Set(missing)]).toEqual([])
  })
})

describe("links between the docs", () => {
  const files = ["README.md", ...docs.map((d) => `docs/${d}`), ...readdirSync(path.join(root, "examples")).map((d) => `examples/${d}/README.md`).filter((f) => existsSync(path.join(root, f)))]

  it("every relative link in README.md, docs/ and the examples' READMEs points at a file that exists", () => {
    const broken: Array<string> = []
    for (const file of files) {
      for (const m of read(file).matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1].split("#")[0]
        if (target === "" || /^[a-z]+:/.test(target)) continue
        if (!existsSync(path.join(root, path.dirname(file), target))) broken.push(`${file}: ${m[1]}`)
      }
    }
    expect(broken).toEqual([])
  })

  it("README.md and docs/examples.md link every doc", () => {
    for (const doc of docs) {
      if (doc !== "examples.md") expect(read("docs/examples.md"), `docs/examples.md → ${doc}`).toContain(`](${doc})`)
      expect(read("README.md"), `README.md → docs/${doc}`).toContain(`](docs/${doc})`)
    }
  })
})

describe("examples", () => {
  const dirs = readdirSync(path.join(root, "examples")).filter((d) => statSync(path.join(root, "examples", d)).isDirectory()).sort()
  const testFiles = (dir: string): Array<string> =>
    readdirSync(path.join(root, dir), { recursive: true, encoding: "utf8" })
      .filter((f) => f.endsWith(".test.ts") && !f.includes("node_modules"))
      .map((f) => path.join(dir, f))
  const tests = ["test", "core/test", "cli/test"].flatMap(testFiles).map((f) => readFileSync(path.join(root, f), "utf8")).join("\n")

  it("each is described in docs/examples.md", () => {
    for (const dir of dirs) expect(read("docs/examples.md"), dir).toContain(`examples/${dir}`)
  })

  it("each is exercised by a test that names it (run, or checked to be refused)", () => {
    for (const dir of dirs) expect(tests.includes(`examples/${dir}/`), `examples/${dir} is not run by any test`).toBe(true)
  })
})

describe("what is not supported yet", () => {
  it("README.md names every roadmap item that refused keys come with, and links the generated list", () => {
    const readme = read("README.md")
    const section = readme.slice(readme.indexOf("## Not here yet"), readme.indexOf("## What is here"))
    expect(section).toContain("](docs/configuration.md#not-supported-yet)")
    for (const item of Object.values(ROADMAP)) expect(section, item).toContain(`**${item}**`)
  })

  it("docs/configuration.md lists every refused key with the values refused", () => {
    const text = read("docs/configuration.md")
    const list = text.slice(text.indexOf("## Not supported yet"))
    for (const rule of UNSUPPORTED_RULES) expect(list, rule.key).toContain(`| \`${rule.key}\` | ${rule.types.join(", ")} | ${rule.refused}`)
  })

  it("an example that is refused says so in its own words, and every other is accepted", () => {
    for (const dir of readdirSync(path.join(root, "examples"))) {
      for (const file of readdirSync(path.join(root, "examples", dir)).filter((f) => f.endsWith(".dstack.yml"))) {
        const text = read(`examples/${dir}/${file}`)
        const refused = unsupportedKeys(Schema.decodeUnknownSync(AnyConfiguration)(parseYaml(text)))
        if (refused.length > 0) expect(text, `examples/${dir}/${file}`).toMatch(/NOT SUPPORTED YET/)
        else expect(text, `examples/${dir}/${file}`).not.toMatch(/NOT SUPPORTED YET/)
      }
    }
  })
})
