/**
 * Bundles a runner build (its entry file) into one file with esbuild, so that Node starts
 * a runner in a few hundred milliseconds instead of seconds through tsx, and so that one file
 * (with its sha256) can be copied to another machine. Packages with native parts (dockerode
 * and its SSH stack) stay outside the bundle, imported by absolute path from where the module
 * importing them resolves them, so the bundle runs from any directory on this machine.
 * esbuild is loaded when first used: it is an optional peer dependency of core.
 *
 * Two formats: an ES module (`.mjs`, the default), or with `snapshot: true` a CommonJS script
 * (`.cjs`) that can also be the entry of a Node.js startup snapshot (`node --build-snapshot`,
 * see RunnerSnapshot.ts): no top-level await, no real dynamic `import()` (a snapshot's code
 * has no dynamic import callback), the packages kept outside loaded with a `require` made at
 * run time from the bundle's own path. An entry that the script format cannot hold (top-level
 * await) is bundled as an ES module instead: it then starts without a snapshot.
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

// In the script format, a package kept outside (an absolute path) is required through a
// `require` made from the bundle's path when it is asked for: the module wrapper's own one is,
// in a startup snapshot's code, the snapshot builder's, which loads built-in modules only.
const SCRIPT_BANNER = `var require = ((r) => (id) => id.startsWith("/") ? r("node:module").createRequire(__filename)(id) : r(id))(require);`

/** A bundled runner: the file, the sha256 of its bytes (lowercase hex), and its format. */
export interface RunnerBundle {
  readonly file: string
  readonly sha256: string
  /** `cjs`: a script that can be a startup snapshot's entry (`.cjs`); `esm`: an ES module (`.mjs`). */
  readonly format?: "esm" | "cjs"
}

export interface BundleOptions {
  /** Bundle as a script a startup snapshot can be built from, when the entry allows (default false). */
  readonly snapshot?: boolean
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
 * Writes `<outDir>/runner-<pid>-<random>.mjs` (or `.cjs`, see BundleOptions) from `entry` and
 * answers its path, sha256 and format.
 *
 * @example
 * const { file, sha256 } = await bundleRunner(require.resolve("@dstack-ts/cli/runner"), "/tmp/runner")
 */
export const bundleRunner = async (entry: string, outDir: string, options: BundleOptions = {}): Promise<RunnerBundle> => {
  const esbuild = await loadEsbuild(entry)
  fs.mkdirSync(outDir, { recursive: true })
  const base = path.join(outDir, `runner-${process.pid}-${randomUUID().slice(0, 8)}`)
  if (options.snapshot === true) {
    const script = await build(esbuild, entry, `${base}.cjs`, "cjs").then(() => true, (error: unknown) => {
      // Top-level await has no place in a script: such an entry is bundled as an ES module.
      if (/[Tt]op-level await/.test(String((error as Error)?.message ?? error))) return false
      throw error
    })
    if (script) return answer(`${base}.cjs`, "cjs")
  }
  await build(esbuild, entry, `${base}.mjs`, "esm")
  return answer(`${base}.mjs`, "esm")
}

const answer = (file: string, format: "esm" | "cjs"): RunnerBundle => ({
  file,
  sha256: createHash("sha256").update(fs.readFileSync(file)).digest("hex"),
  format
})

const build = async (esbuild: typeof import("esbuild"), entry: string, outfile: string, format: "esm" | "cjs") => {
  await esbuild.build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: "node",
    format,
    target: "node20",
    logLevel: "silent",
    banner: { js: format === "esm" ? BANNER : SCRIPT_BANNER },
    // In the script format `import(x)` becomes `require(x)`: a startup snapshot has no dynamic import.
    ...(format === "cjs" ? { supported: { "dynamic-import": false } } : {}),
    plugins: [
      {
        name: "keep-outside",
        setup(build) {
          const filter = new RegExp(`^(${KEEP_OUTSIDE.join("|")})(/.*)?$`)
          build.onResolve({ filter }, (args) => {
            const resolved = (() => {
              try {
                const file = createRequire(path.join(args.resolveDir || path.dirname(entry), "_")).resolve(args.path)
                return format === "esm" ? pathToFileURL(file).href : file
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
}
