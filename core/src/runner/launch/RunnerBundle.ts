/**
 * Bundles a runner build (its entry file) into one ES module with esbuild, so that Node starts
 * a runner in a few hundred milliseconds instead of seconds through tsx, and so that one file
 * (with its sha256) can be copied to another machine. Packages with native parts (dockerode
 * and its SSH stack) stay outside the bundle, imported by absolute URL from where the module
 * importing them resolves them, so the bundle runs from any directory on this machine.
 * esbuild is loaded when first used: it is an optional peer dependency of core.
 */
import { createHash, randomUUID } from "node:crypto"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

/** Imported at run time from where the importing module resolves them, not bundled. */
export const KEEP_OUTSIDE: ReadonlyArray<string> = ["dockerode", "ssh2", "cpu-features"]

// esbuild turns `require` of a bundled CommonJS package into a call that needs a real one in ESM.
const BANNER = `import { createRequire as __dstackCreateRequire } from "node:module"; const require = __dstackCreateRequire(import.meta.url);`

/** A bundled runner: the file and the sha256 of its bytes (lowercase hex). */
export interface RunnerBundle {
  readonly file: string
  readonly sha256: string
}

const loadEsbuild = async (entry: string): Promise<typeof import("esbuild")> => {
  // From the entry's package first (a runner build depends on what it bundles), then core's.
  for (const from of [entry, fileURLToPath(import.meta.url)]) {
    try {
      return (await import(pathToFileURL(createRequire(from).resolve("esbuild")).href)) as typeof import("esbuild")
    } catch {
      // not resolvable from there
    }
  }
  throw new Error(`cannot bundle ${entry}: esbuild is not installed where the entry or @dstack-ts/core can import it (npm install esbuild)`)
}

/**
 * Writes `<outDir>/runner-<pid>-<random>.mjs` from `entry` and answers its path and sha256.
 *
 * @example
 * const { file, sha256 } = await bundleRunner(require.resolve("@dstack-ts/cli/runner"), "/tmp/runner")
 */
export const bundleRunner = async (entry: string, outDir: string): Promise<RunnerBundle> => {
  const esbuild = await loadEsbuild(entry)
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
                return pathToFileURL(createRequire(path.join(args.resolveDir || path.dirname(entry), "_")).resolve(args.path)).href
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
  const sha256 = createHash("sha256").update(fs.readFileSync(outfile)).digest("hex")
  return { file: outfile, sha256 }
}
