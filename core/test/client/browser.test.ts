// The client must bundle for a browser: no node: module may be reached from its entry except
// through ConfigFile.ts and Attach.ts, which only dynamic imports (Client.fromConfig,
// run.attach) load.
import { describe, expect, it } from "vitest"
import { build } from "esbuild"
import { fileURLToPath } from "node:url"

describe("browser build of the client", () => {
  it("bundles for the browser with node: imports confined to ConfigFile.ts and Attach.ts", async () => {
    const entry = fileURLToPath(new URL("../../src/client/index.ts", import.meta.url))
    const result = await build({
      entryPoints: [entry],
      bundle: true,
      write: false,
      format: "esm",
      platform: "browser",
      splitting: true,
      outdir: "/tmp/dstack-client-browser",
      metafile: true,
      external: ["node:*"],
      logLevel: "silent"
    })
    const importers = Object.entries(result.metafile.inputs)
      .filter(([, input]) => input.imports.some((i) => i.path.startsWith("node:")))
      .map(([path]) => path.replace(/.*core\/src\//, ""))
    expect(importers.sort()).toEqual(["client/Attach.ts", "client/ConfigFile.ts"])
    // They land in chunks of their own that the entry only loads dynamically.
    const entryOut = Object.entries(result.metafile.outputs).find(([, o]) => o.entryPoint?.endsWith("client/index.ts"))!
    expect(entryOut[1].imports.filter((i) => i.path.startsWith("node:"))).toEqual([])
    expect(entryOut[1].imports.some((i) => i.kind === "dynamic-import")).toBe(true)
  })
})
