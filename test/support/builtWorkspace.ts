// The workspace's packages laid out as a third party installs them — each package's published
// package.json (exports at dist/), its bin/ and its sources compiled to JavaScript under
// `.test-build/<hash>/node_modules/<name>/` — for the end-to-end suites that spawn the `dstack`
// command on Node. Spawned from the sources, every run of the command paid tsx's module hooks
// (a second thread answering every import of the modules a command loads): about 1.3 s of
// CPU per run, twice what the command itself costs. The compiled tree is what `npm install`
// gives, less the declarations, and third-party packages resolve from the workspace's
// node_modules above it. Deno runs the sources (it compiles TypeScript itself, without hooks).
//
// The tree is named by a hash of every source file and manifest: built once per change (esbuild,
// 2–3 s), shared by concurrent test runs, and never rewritten while a run reads it.
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { publishManifest, root, sourcesUnder, workspacePackages, type WorkspacePackage } from "../../scripts/packages.ts"

/** Where the built trees live (git-ignored). */
export const BUILT_ROOT = path.join(root, ".test-build")

const sourcesOf = (pkg: WorkspacePackage): ReadonlyArray<string> => [...sourcesUnder(path.join(pkg.dir, "src"))].sort()

const filesUnder = (dir: string): ReadonlyArray<string> =>
  fs.existsSync(dir)
    ? fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name)).sort()
    : []

/** A hash of what the build reads: every package's manifest, sources and bin/. */
const fingerprint = (packages: ReadonlyArray<WorkspacePackage>): string => {
  const hash = createHash("sha256")
  for (const pkg of packages) {
    for (const file of [path.join(pkg.dir, "package.json"), ...sourcesOf(pkg), ...filesUnder(path.join(pkg.dir, "bin"))]) {
      hash.update(path.relative(root, file)).update("\0").update(fs.readFileSync(file)).update("\0")
    }
  }
  return hash.digest("hex").slice(0, 16)
}

const compile = async (pkg: WorkspacePackage, target: string): Promise<void> => {
  const esbuild = await import("esbuild")
  const entryPoints = sourcesOf(pkg)
  if (entryPoints.length === 0) return
  // Each source becomes one module: every import stays an import, relative `.ts` ones pointed at
  // the `.js` files beside them (what tsc's rewriteRelativeImportExtensions does in `npm run build`).
  const result = await esbuild.build({
    entryPoints: [...entryPoints],
    outbase: path.join(pkg.dir, "src"),
    outdir: path.join(target, "dist"),
    bundle: true,
    format: "esm",
    platform: "node",
    target: "es2022",
    tsconfig: path.join(root, "tsconfig.json"),
    logLevel: "silent",
    write: true,
    plugins: [{
      name: "keep-imports",
      setup(build) {
        build.onResolve({ filter: /.*/ }, (args) => {
          // JSON (a package reading its own package.json) is inlined: esbuild drops the import
          // attribute of an external import, which Node requires for JSON.
          if (args.kind === "entry-point" || args.path.endsWith(".json")) return undefined
          return { path: /^\.\.?\//.test(args.path) ? args.path.replace(/\.(m?)ts$/, ".$1js") : args.path, external: true }
        })
      }
    }]
  })
  if (result.errors.length > 0) throw new Error(`${pkg.manifest.name}: ${result.errors.map((e) => e.text).join("; ")}`)
}

/**
 * Builds (or finds) the installed-layout tree of the current sources and answers its
 * node_modules folder; `<it>/@dstack-ts/cli/bin/dstack.mjs` is the command.
 */
export const buildWorkspace = async (): Promise<string> => {
  const packages = workspacePackages()
  const dir = path.join(BUILT_ROOT, fingerprint(packages))
  const modules = path.join(dir, "node_modules")
  if (fs.existsSync(modules)) {
    const now = new Date()
    fs.utimesSync(dir, now, now)
    return modules
  }
  const staging = `${dir}.tmp-${process.pid}-${Date.now()}`
  try {
    await Promise.all(packages.map(async (pkg) => {
      const target = path.join(staging, "node_modules", pkg.manifest.name)
      fs.mkdirSync(target, { recursive: true })
      fs.writeFileSync(path.join(target, "package.json"), `${JSON.stringify(publishManifest(pkg.manifest), null, 2)}\n`)
      if (fs.existsSync(path.join(pkg.dir, "bin"))) fs.cpSync(path.join(pkg.dir, "bin"), path.join(target, "bin"), { recursive: true })
      await compile(pkg, target)
    }))
    try {
      fs.renameSync(staging, dir)
    } catch (error) {
      // Another run built the same tree first: use theirs.
      if (!fs.existsSync(modules)) throw error
      fs.rmSync(staging, { recursive: true, force: true })
    }
  } catch (error) {
    fs.rmSync(staging, { recursive: true, force: true })
    throw error
  }
  prune(dir)
  return modules
}

/** Keeps the three trees used last (and any being built); a tree of a day-old run is not in use. */
const prune = (keep: string): void => {
  const trees = fs
    .readdirSync(BUILT_ROOT, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => ({ dir: path.join(BUILT_ROOT, e.name), name: e.name, mtime: fs.statSync(path.join(BUILT_ROOT, e.name)).mtimeMs }))
  const old = Date.now() - 24 * 3600_000
  const built = trees.filter((t) => !t.name.includes(".tmp-")).sort((a, b) => b.mtime - a.mtime)
  for (const tree of [...built.slice(3), ...trees.filter((t) => t.name.includes(".tmp-") && t.mtime < old)]) {
    if (tree.dir !== keep) fs.rmSync(tree.dir, { recursive: true, force: true })
  }
}
