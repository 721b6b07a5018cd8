// The package rules of docs/architecture.md, read from the sources: core imports no plugin and
// depends on no database driver, Docker client or plotting library; a plugin imports no other
// plugin, only core and the libraries under libs/, which import no dstack-ts package; the
// client takes only core's browser-safe `wire` entry; no source reaches into another package
// by a relative path; and every npm package a source imports is declared in its own
// package.json.
import * as fs from "node:fs"
import { builtinModules } from "node:module"
import * as path from "node:path"
import ts from "typescript"
import { describe, expect, it } from "vitest"

const root = process.cwd()
const BUILTINS = new Set(builtinModules)

interface Pkg {
  readonly dir: string
  readonly name: string
  readonly json: {
    dependencies?: Record<string, string>
    peerDependencies?: Record<string, string>
    optionalDependencies?: Record<string, string>
  }
}

/** The workspace packages, from the root package.json's `workspaces`. */
const packages = (): ReadonlyArray<Pkg> => {
  const globs: Array<string> = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")).workspaces
  const dirs = globs.flatMap((g) =>
    g.endsWith("/*")
      ? fs.readdirSync(path.join(root, g.slice(0, -2))).map((d) => path.join(g.slice(0, -2), d))
      : [g])
  return dirs
    .filter((d) => fs.existsSync(path.join(root, d, "package.json")))
    .map((dir) => {
      const json = JSON.parse(fs.readFileSync(path.join(root, dir, "package.json"), "utf8"))
      return { dir, name: json.name, json }
    })
}

const sourcesOf = (dir: string): ReadonlyArray<string> => {
  const out: Array<string> = []
  const walk = (d: string) => {
    for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, entry.name)
      if (entry.isDirectory()) walk(p)
      else if (/\.(ts|mts|tsx)$/.test(entry.name) && !entry.name.endsWith(".d.ts")) out.push(p)
    }
  }
  const src = path.join(root, dir, "src")
  if (fs.existsSync(src)) walk(src)
  return out
}

/** Every module specifier a file imports or re-exports, static or dynamic (`import("x")`). */
const importsOf = (file: string): ReadonlyArray<string> =>
  ts.preProcessFile(fs.readFileSync(file, "utf8"), true, true).importedFiles.map((f) => f.fileName)

/** `@scope/name/sub` → `@scope/name`; `name/sub` → `name`. */
const packageOf = (spec: string): string => {
  const parts = spec.split("/")
  return spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]
}

const isBuiltin = (spec: string) => spec.startsWith("node:") || BUILTINS.has(spec.split("/")[0])

const all = packages()
const byName = new Map(all.map((p) => [p.name, p]))
const isPlugin = (name: string) => byName.get(name)?.dir.startsWith("plugins/") ?? false

/** Every (package, file, specifier) in the workspace's sources. */
const edges = all.flatMap((pkg) =>
  sourcesOf(pkg.dir).flatMap((file) =>
    importsOf(file).map((spec) => ({ pkg, file: path.relative(root, file), spec }))))

describe("the package rules", () => {
  it("finds the packages and their imports", () => {
    expect(all.map((p) => p.name)).toEqual(expect.arrayContaining(["@dstack-ts/core", "@dstack-ts/client", "@dstack-ts/cli"]))
    expect(all.filter((p) => p.dir.startsWith("plugins/")).length).toBeGreaterThanOrEqual(9)
    expect(edges.length).toBeGreaterThan(500)
  })

  it("core imports no plugin, no client and no CLI", () => {
    const bad = edges.filter((e) => e.pkg.name === "@dstack-ts/core" && e.spec.startsWith("@dstack-ts/") && packageOf(e.spec) !== "@dstack-ts/core")
    expect(bad.map((e) => `${e.file} imports ${e.spec}`)).toEqual([])
  })

  it("a plugin imports no other plugin (only core and the libraries under libs/)", () => {
    const bad = edges.filter((e) =>
      isPlugin(e.pkg.name) && e.spec.startsWith("@dstack-ts/") && packageOf(e.spec) !== "@dstack-ts/core" && !byName.get(packageOf(e.spec))?.dir.startsWith("libs/"))
    expect(bad.map((e) => `${e.file} imports ${e.spec}`)).toEqual([])
  })

  it("a library (libs/) imports no plugin and no other dstack-ts package, and a plugin may import it", () => {
    const isLib = (name: string) => byName.get(name)?.dir.startsWith("libs/") ?? false
    expect(all.some((p) => isLib(p.name))).toBe(true)
    const bad = edges.filter((e) => isLib(e.pkg.name) && e.spec.startsWith("@dstack-ts/") && packageOf(e.spec) !== e.pkg.name)
    expect(bad.map((e) => `${e.file} imports ${e.spec}`)).toEqual([])
  })

  it("the client takes only core's browser-safe entry, @dstack-ts/core/wire", () => {
    const bad = edges.filter((e) => e.pkg.name === "@dstack-ts/client" && packageOf(e.spec) === "@dstack-ts/core" && e.spec !== "@dstack-ts/core/wire")
    expect(bad.map((e) => `${e.file} imports ${e.spec}`)).toEqual([])
  })

  it("no source reaches into another package by a relative path", () => {
    const bad = edges.filter((e) => {
      if (!e.spec.startsWith(".")) return false
      const target = path.relative(root, path.resolve(root, path.dirname(e.file), e.spec))
      return !target.startsWith(`${e.pkg.dir}/`)
    })
    expect(bad.map((e) => `${e.file} imports ${e.spec}`)).toEqual([])
  })

  it("every npm package a source imports is declared in its package.json", () => {
    const bad = edges.filter((e) => {
      if (e.spec.startsWith(".") || isBuiltin(e.spec)) return false
      const name = packageOf(e.spec)
      if (name === e.pkg.name) return false
      const declared = { ...e.pkg.json.dependencies, ...e.pkg.json.peerDependencies, ...e.pkg.json.optionalDependencies }
      return !(name in declared)
    })
    expect([...new Set(bad.map((e) => `${e.pkg.name}: ${packageOf(e.spec)} (imported by ${e.file})`))]).toEqual([])
  })

  it("core depends on no database driver, Docker client or plotting library", () => {
    const core = byName.get("@dstack-ts/core")!
    const FORBIDDEN = /^(pg|postgres|@electric-sql\/pglite|mysql2?|sqlite3|better-sqlite3|dockerode|docker-modem|vega|vega-lite|vega-embed|plotly\.js.*|chart\.js|d3)$/
    const declared = Object.keys({ ...core.json.dependencies, ...core.json.peerDependencies, ...core.json.optionalDependencies })
    expect(declared.filter((d) => FORBIDDEN.test(d))).toEqual([])
    const imported = edges.filter((e) => e.pkg.name === "@dstack-ts/core" && FORBIDDEN.test(packageOf(e.spec)))
    expect(imported.map((e) => `${e.file} imports ${e.spec}`)).toEqual([])
  })
})
