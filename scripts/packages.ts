/**
 * The workspace's packages, found from the root package.json `workspaces`, and the manifest each
 * is published with: the repository's package.json points its `exports` at the TypeScript sources
 * (what vitest, tsx and Deno run, with no build step); the published one points them at the
 * built JavaScript and declarations in dist/ (what plain Node and type checkers of consumers read).
 */
import * as fs from "node:fs"
import * as path from "node:path"

export const root = path.resolve(import.meta.dirname, "..")

export interface Manifest {
  readonly name: string
  readonly version: string
  readonly exports?: unknown
  readonly files?: ReadonlyArray<string>
  readonly bin?: string | Record<string, string>
  readonly private?: boolean
  readonly [key: string]: unknown
}

export interface WorkspacePackage {
  /** Absolute path of the package's directory. */
  readonly dir: string
  readonly manifest: Manifest
}

const readJson = (file: string): any => JSON.parse(fs.readFileSync(file, "utf8"))

/** Expands one `workspaces` entry: literal segments and `*` (any one directory name). */
const expand = (pattern: string): ReadonlyArray<string> => {
  let dirs = [root]
  for (const segment of pattern.split("/").filter((s) => s !== "" && s !== ".")) {
    if (segment.includes("*")) {
      const re = new RegExp(`^${segment.split("*").map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join("[^/]*")}$`)
      dirs = dirs.flatMap((d) =>
        fs.existsSync(d) ? fs.readdirSync(d, { withFileTypes: true }).filter((e) => e.isDirectory() && re.test(e.name)).map((e) => path.join(d, e.name)) : []
      )
    } else dirs = dirs.map((d) => path.join(d, segment))
  }
  return dirs.filter((d) => fs.existsSync(path.join(d, "package.json"))).sort()
}

/** Every .ts file under dir (declarations aside). */
export const sourcesUnder = (dir: string): ReadonlyArray<string> =>
  fs.existsSync(dir)
    ? fs.readdirSync(dir, { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile() && /\.m?ts$/.test(e.name) && !e.name.endsWith(".d.ts"))
        .map((e) => path.join(e.parentPath, e.name))
    : []

/** Every workspace package (a directory a `workspaces` entry names, holding a package.json). */
export const workspacePackages = (): ReadonlyArray<WorkspacePackage> => {
  const workspaces: ReadonlyArray<string> = readJson(path.join(root, "package.json")).workspaces ?? []
  const dirs = [...new Set(workspaces.flatMap(expand))]
  return dirs.map((dir) => ({ dir, manifest: readJson(path.join(dir, "package.json")) as Manifest }))
}

/** `./src/a/b.ts` → `./dist/a/b` (no extension); undefined for a path outside src/ or not TypeScript. */
const distBase = (target: string): string | undefined => {
  const m = /^\.\/src\/(.+)\.(m?)ts$/.exec(target)
  return m === null || m[1].endsWith(".d") ? undefined : `./dist/${m[1]}`
}

/** One `exports` target: a source file becomes `{ types, default }` over dist/; anything else stays. */
const publishTarget = (target: unknown, where: string): unknown => {
  if (typeof target === "string") {
    const base = distBase(target)
    if (base !== undefined) return { types: `${base}.d.ts`, default: `${base}.js` }
    if (/\.[cm]?tsx?$/.test(target)) throw new Error(`${where}: "${target}" is TypeScript outside ./src/, which the build does not compile`)
    return target
  }
  if (target !== null && typeof target === "object" && !Array.isArray(target)) {
    return Object.fromEntries(Object.entries(target).map(([k, v]) => [k, publishTarget(v, `${where}[${JSON.stringify(k)}]`)]))
  }
  return target
}

/**
 * The package.json a package is published with: every `exports` target under ./src/ pointed at
 * dist/ (`types` first), `types` for the main entry, and dist/ added to `files`. Throws, naming
 * the package and field, on a shape the build cannot serve.
 */
export const publishManifest = (manifest: Manifest): Manifest => {
  const where = `${manifest.name ?? "(unnamed package)"} package.json`
  if (typeof manifest.name !== "string" || typeof manifest.version !== "string") throw new Error(`${where}: "name" and "version" are required`)
  if (manifest.exports === undefined) throw new Error(`${where}: "exports" is required (e.g. { ".": "./src/index.ts" })`)
  const exports = publishTarget(manifest.exports, `${where} exports`)
  const files = manifest.files ?? []
  if (!files.includes("src")) throw new Error(`${where}: "files" must list "src" (the sources ship beside dist/, for declaration maps and Deno)`)
  const main = (exports as Record<string, any>)["."]
  const { scripts: _scripts, devDependencies: _dev, ...rest } = manifest
  return {
    ...rest,
    exports,
    ...(main !== undefined && typeof main === "object" && typeof main.types === "string" ? { types: main.types } : {}),
    files: files.includes("dist") ? files : [...files, "dist"]
  }
}

/** The JSR (Deno) config of a package: its name, version, license and exports, all pointing at the sources. */
export const jsrConfig = (manifest: Manifest): {
  name: string
  version: string
  license?: string
  exports: Record<string, string>
  publish: { include: ReadonlyArray<string> }
} => {
  const exportsField = manifest.exports
  const entries: ReadonlyArray<[string, unknown]> =
    typeof exportsField === "string" ? [[".", exportsField]] : Object.entries((exportsField ?? {}) as Record<string, unknown>)
  const exports: Record<string, string> = {}
  for (const [key, target] of entries) {
    // A conditional target's source is its `default` (what Node and Deno resolve), else its first TypeScript string.
    const conditions = (target ?? {}) as Record<string, unknown>
    const source = typeof target === "string"
      ? target
      : typeof conditions.default === "string" ? conditions.default : Object.values(conditions).find((t) => typeof t === "string" && /\.tsx?$/.test(t))
    if (typeof source === "string" && /\.tsx?$/.test(source)) exports[key] = source
  }
  // What npm ships, less the build (JSR compiles the sources itself); package.json, which sources import for their version.
  const include = [...(manifest.files ?? []).filter((f) => f !== "dist"), "package.json"]
  return { name: manifest.name, version: manifest.version, ...(typeof manifest.license === "string" ? { license: manifest.license } : {}), exports, publish: { include } }
}
