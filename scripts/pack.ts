/**
 * `npm run pack`: builds every workspace package (scripts/build.ts), then `npm pack`s each with the
 * manifest it is published with (scripts/packages.ts `publishManifest`: exports to dist/) into
 * one directory of tarballs; publish those (`npm publish <tarball>`), not the package directories,
 * whose package.json points at the sources.
 * Usage: `npx tsx scripts/pack.ts [--out DIR] [--no-build]` (default DIR: .pack/ at the root);
 * prints one tarball path a line.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { publishManifest, root, workspacePackages, type WorkspacePackage } from "./packages.ts"

const run = promisify(execFile)

/** This environment without the npm_* settings of an `npm run` it may be called from (its workspace, its prefix). */
const withoutNpmSettings = (): NodeJS.ProcessEnv => Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)))

/** Copies what npm would pack from `pkg` into `stage`, with the published package.json. */
const stagePackage = (pkg: WorkspacePackage, stage: string): void => {
  const manifest = publishManifest(pkg.manifest)
  fs.mkdirSync(stage, { recursive: true })
  for (const entry of [...(manifest.files ?? []), "LICENSE"]) {
    const from = path.join(pkg.dir, entry)
    if (fs.existsSync(from)) fs.cpSync(from, path.join(stage, entry), { recursive: true, dereference: true })
    else if (entry === "dist") throw new Error(`${pkg.manifest.name}: no dist/ (did the build run?)`)
  }
  fs.writeFileSync(path.join(stage, "package.json"), `${JSON.stringify(manifest, null, 2)}\n`)
}

/** Packs every workspace package into `outDir`; answers the tarballs' absolute paths, in workspace order. */
export const packAll = async (outDir: string, options: { readonly build?: boolean } = {}): Promise<ReadonlyArray<string>> => {
  // The build is a child process: it type-checks for a minute or more, and a caller (a test
  // worker) must stay responsive meanwhile.
  if (options.build ?? true) await run(process.execPath, ["--import", "tsx", path.join(root, "scripts", "build.ts")], { cwd: root, env: withoutNpmSettings() })
  const packages = workspacePackages().filter((p) => p.manifest.private !== true)
  const stageRoot = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-pack-"))
  try {
    const stages = packages.map((pkg, i) => {
      const stage = path.join(stageRoot, String(i))
      stagePackage(pkg, stage)
      return stage
    })
    fs.mkdirSync(outDir, { recursive: true })
    // One npm process for all packages, run outside the workspace so that npm treats each as a plain folder.
    const { stdout } = await run("npm", ["pack", ...stages, "--pack-destination", path.resolve(outDir), "--json", "--ignore-scripts"], {
      cwd: stageRoot,
      env: withoutNpmSettings(),
      maxBuffer: 64 * 1024 * 1024
    })
    const packed = JSON.parse(stdout) as ReadonlyArray<{ readonly filename: string }>
    return packed.map((p) => path.join(path.resolve(outDir), p.filename))
  } finally {
    fs.rmSync(stageRoot, { recursive: true, force: true })
  }
}

if (process.argv[1]?.endsWith("scripts/pack.ts")) {
  const args = process.argv.slice(2)
  const out = args.includes("--out") ? args[args.indexOf("--out") + 1] : path.join(root, ".pack")
  packAll(out, { build: !args.includes("--no-build") }).then(
    (tarballs) => console.log(tarballs.join("\n")),
    (error: unknown) => {
      console.error(error instanceof Error ? error.message : error)
      process.exit(1)
    }
  )
}
