/**
 * Bundles a TypeScript runner entry into one ES module with esbuild, so that Node starts a
 * runner in a few hundred milliseconds instead of seconds through tsx. Packages with native
 * parts (dockerode and its SSH stack) stay outside the bundle, imported by absolute URL so the
 * bundle runs from any directory.
 */
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { pathToFileURL } from "node:url"

/** Imported at run time from where the entry's package resolves them, not bundled. */
const KEEP_OUTSIDE = ["dockerode", "ssh2", "cpu-features"]

// esbuild turns `require` of a bundled CommonJS package into a call that needs a real one in ESM.
const BANNER = `import { createRequire as __dstackCreateRequire } from "node:module"; const require = __dstackCreateRequire(import.meta.url);`

/** Writes `<outDir>/runner-<pid>-<random>.mjs` from `entry` and answers its path. */
export const bundleRunner = async (entry: string, outDir: string): Promise<string> => {
  const esbuild = await import("esbuild")
  const requireFromEntry = createRequire(entry)
  fs.mkdirSync(outDir, { recursive: true })
  const outfile = path.join(outDir, `runner-${process.pid}-${randomUUID().slice(0, 8)}.mjs`)
  await esbuild.build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    logLevel: "silent",
    banner: { js: BANNER },
    plugins: [
      {
        name: "keep-outside",
        setup(build) {
          const filter = new RegExp(`^(${KEEP_OUTSIDE.join("|")})(/.*)?$`)
          build.onResolve({ filter }, (args) => {
            const resolved = (() => {
              try {
                return pathToFileURL(requireFromEntry.resolve(args.path)).href
              } catch {
                // Not installed: the bundle fails only when a job needs it (a docker job).
                return args.path
              }
            })()
            return { path: resolved, external: true }
          })
        }
      }
    ]
  })
  return outfile
}
