// The SDK bundles for a browser on its own: esbuild resolves `@dstack-ts/client` with the
// browser condition, bundles everything it reaches (no externals), and the test fails on any
// Node.js built-in (`node:fs`, `fs` …) or any module of the server side of core (server,
// engine, runner, state, repos) or of a plugin being pulled in.
import { builtinModules } from "node:module"
import { gzipSync } from "node:zlib"
import { describe, expect, it } from "vitest"
import { build, type Plugin } from "esbuild"

const NODE_BUILTINS = new Set(builtinModules)
const SERVER_SIDE = /\/core\/src\/(server|engine|runner|state|repos\/(?!RepoCode)|config|testing)\b|\/plugins\/|node_modules\/(hono|@hono|dockerode|@electric-sql|postgres|unstorage|tar|ignore)\//

/** Records every Node.js built-in the bundle tries to import, instead of letting esbuild fail on the first. */
const recordNodeImports = (seen: Array<string>): Plugin => ({
  name: "record-node-imports",
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      const bare = args.path.startsWith("node:") ? args.path.slice(5) : args.path
      if (args.path.startsWith("node:") || NODE_BUILTINS.has(bare.split("/")[0])) {
        seen.push(`${args.path} (from ${args.importer.replace(/.*\/(client|core)\//, "$1/")})`)
        return { path: args.path, external: true }
      }
      return undefined
    })
  }
})

describe("browser bundle of @dstack-ts/client", () => {
  it("has no Node.js built-in and nothing of the server side, and says how big it is", async () => {
    const nodeImports: Array<string> = []
    const result = await build({
      stdin: { contents: `export * from "@dstack-ts/client"`, resolveDir: process.cwd(), loader: "ts" },
      bundle: true,
      write: false,
      format: "esm",
      platform: "browser",
      minify: true,
      metafile: true,
      plugins: [recordNodeImports(nodeImports)],
      logLevel: "silent"
    })
    expect(nodeImports).toEqual([])
    const inputs = Object.keys(result.metafile.inputs)
    expect(inputs.filter((path) => SERVER_SIDE.test(path))).toEqual([])
    // The browser entry, not the Node one.
    expect(inputs.some((path) => path.endsWith("client/src/index.ts"))).toBe(true)
    expect(inputs.some((path) => /client\/src\/(node|ConfigFile|Attach)\.ts$/.test(path))).toBe(false)
    const bytes = result.outputFiles[0].contents
    const gzipped = gzipSync(bytes).length
    console.log(`@dstack-ts/client browser bundle: ${(bytes.length / 1024).toFixed(0)} KiB minified, ${(gzipped / 1024).toFixed(0)} KiB gzipped`)
    expect(bytes.length).toBeGreaterThan(0)
  })
})
