/**
 * `npm run build`: compiles every workspace package's src/ to JavaScript and declarations in its
 * dist/ (src/a/b.ts → dist/a/b.js, b.d.ts, b.d.ts.map), and writes its jsr.json (name, version,
 * exports to the sources) for publishing to JSR. One TypeScript program over all packages, with
 * the root tsconfig.json's options, so that the workspace is checked once and a package's
 * imports of another (`@dstack-ts/core`) stay bare specifiers in what it emits.
 * Usage: `npx tsx scripts/build.ts [package-dir …]` (default: all); fails on any type error.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import ts from "typescript"
import { jsrConfig, root, sourcesUnder, workspacePackages, type WorkspacePackage } from "./packages.ts"

const format: ts.FormatDiagnosticsHost = {
  getCanonicalFileName: (f) => f,
  getCurrentDirectory: () => root,
  getNewLine: () => "\n"
}

/** The root tsconfig.json's compiler options, set to emit. */
const compilerOptions = (): ts.CompilerOptions => {
  const configFile = path.join(root, "tsconfig.json")
  const read = ts.readConfigFile(configFile, ts.sys.readFile)
  if (read.error) throw new Error(ts.formatDiagnostics([read.error], format))
  const parsed = ts.parseJsonConfigFileContent(read.config, ts.sys, root, undefined, configFile)
  if (parsed.errors.length > 0) throw new Error(ts.formatDiagnostics(parsed.errors, format))
  return {
    ...parsed.options,
    noEmit: false,
    declaration: true,
    declarationMap: true,
    // Emitted under outDir mirroring the repository; writeFile below moves each file to its package's dist/.
    rootDir: root,
    outDir: path.join(root, ".build-out"),
    tsBuildInfoFile: undefined,
    incremental: false
  }
}

/** The package whose src/ holds `file`, and the path of `file` under that src/. */
const owner = (packages: ReadonlyArray<WorkspacePackage>, file: string): { pkg: WorkspacePackage; rel: string } | undefined => {
  for (const pkg of packages) {
    const rel = path.relative(path.join(pkg.dir, "src"), file)
    if (!rel.startsWith("..") && !path.isAbsolute(rel)) return { pkg, rel }
  }
  return undefined
}

export const build = (only?: ReadonlyArray<string>): ReadonlyArray<WorkspacePackage> => {
  const all = workspacePackages()
  const packages = only === undefined || only.length === 0 ? all : all.filter((p) => only.some((o) => path.resolve(o) === p.dir))
  if (only !== undefined && only.length > 0 && packages.length !== only.length) {
    throw new Error(`not a workspace package: ${only.filter((o) => !all.some((p) => p.dir === path.resolve(o))).join(", ")}`)
  }
  const options = compilerOptions()
  const outDir = options.outDir!
  const rootNames = packages.flatMap((p) => sourcesUnder(path.join(p.dir, "src")))
  const program = ts.createProgram({ rootNames, options })
  const diagnostics = ts.getPreEmitDiagnostics(program)
  if (diagnostics.length > 0) throw new Error(`type errors:\n${ts.formatDiagnosticsWithColorAndContext(diagnostics, format)}`)

  for (const pkg of packages) fs.rmSync(path.join(pkg.dir, "dist"), { recursive: true, force: true })
  const escapes: Array<string> = []
  const emitted = program.emit(undefined, (fileName, text) => {
    // fileName is outDir/<path of the source from the root>.{js,d.ts,d.ts.map}; JSON files a
    // source imports (its package.json) are read in place, not copied.
    if (fileName.endsWith(".json")) return
    const source = path.join(root, path.relative(outDir, fileName))
    const found = owner(all, source)
    if (found === undefined || !packages.includes(found.pkg)) return
    const target = path.join(found.pkg.dir, "dist", found.rel)
    // A declaration that reaches into another package by a relative path would break once installed.
    if (target.endsWith(".d.ts")) {
      for (const m of text.matchAll(/(?:from |import\()"(\.{1,2}\/[^"]+)"/g)) {
        const resolved = path.resolve(path.dirname(target), m[1])
        if (!resolved.startsWith(found.pkg.dir + path.sep)) escapes.push(`${path.relative(root, target)}: "${m[1]}" leaves ${found.pkg.manifest.name}`)
      }
    }
    fs.mkdirSync(path.dirname(target), { recursive: true })
    fs.writeFileSync(target, text)
  })
  if (emitted.diagnostics.length > 0) throw new Error(`emit errors:\n${ts.formatDiagnosticsWithColorAndContext(emitted.diagnostics, format)}`)
  if (escapes.length > 0) throw new Error(`declarations that import another package by path (export the type from that package instead):\n${escapes.join("\n")}`)

  for (const pkg of packages) fs.writeFileSync(path.join(pkg.dir, "jsr.json"), `${JSON.stringify(jsrConfig(pkg.manifest), null, 2)}\n`)
  return packages
}

if (process.argv[1]?.endsWith("scripts/build.ts")) {
  const started = Date.now()
  try {
    const built = build(process.argv.slice(2))
    console.log(`built ${built.map((p) => p.manifest.name).join(", ")} in ${((Date.now() - started) / 1000).toFixed(1)} s`)
  } catch (error) {
    console.error(error instanceof Error ? error.message : error)
    process.exit(1)
  }
}
