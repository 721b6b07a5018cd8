/**
 * Finding installed plugins without a build that names them: the packages in a project's
 * `node_modules` (and those of the folders above it) whose package.json marks them as dstack-ts
 * plugins, loaded by their entry's default export and checked by the plugin host. This is how
 * `dstack push`/`pull` (and the SDK on Node or Deno) find a codec plugin that was only installed.
 *
 * A package marks itself with `"dstack-ts": { "plugin": true }` in its package.json (or the
 * keyword `dstack-ts-plugin`). A project may also list the plugins it requires,
 * `"dstack-ts": { "plugins": ["@acme/dstack-codec-npy"] }`, so that a missing one is an error.
 * Node-only modules are imported when discovery runs, never when this module loads.
 */
import { Effect } from "effect"
import { isPlugin, pluginLabel } from "./Plugin.ts"
import { PluginError, PluginProblem } from "./PluginError.ts"
import * as PluginHost from "./PluginHost.ts"

/** The package.json key of dstack-ts's settings. */
export const PACKAGE_KEY = "dstack-ts"
/** The npm keyword that marks a plugin package (the same as `"dstack-ts": { "plugin": true }`). */
export const PLUGIN_KEYWORD = "dstack-ts-plugin"

/** A package found in a node_modules folder that marks itself as a plugin. */
export interface PluginPackage {
  readonly name: string
  readonly version: string
  /** The package's folder. */
  readonly dir: string
  /** The entry module loaded for its plugin (the `.` export, else `module`/`main`). */
  readonly entry: string
}

/** A loaded plugin package: what its entry exports as default. */
export interface DiscoveredPlugin {
  readonly package: PluginPackage
  readonly plugin: unknown
}

export interface DiscoverOptions {
  /** The project folder to start from (default: the current working directory). */
  readonly from?: string
}

export interface LoadOptions extends DiscoverOptions {
  /**
   * Plugins the caller brings itself (the CLI's first-party handlers). A discovered package of
   * the same name replaces one of these: the project's installed version is the one used.
   */
  readonly include?: ReadonlyArray<unknown>
  /** Passed to the plugin host (the core version ranges are checked against). */
  readonly host?: PluginHost.PluginHostOptions
}

interface PackageJson {
  readonly name?: unknown
  readonly version?: unknown
  readonly keywords?: unknown
  readonly exports?: unknown
  readonly module?: unknown
  readonly main?: unknown
  readonly [PACKAGE_KEY]?: { readonly plugin?: unknown; readonly plugins?: unknown }
}

const problem = (plugin: string | undefined, message: string) =>
  new PluginProblem({ reason: "NotLoadable", ...(plugin === undefined ? {} : { plugin }), message })

const failWith = (problems: ReadonlyArray<PluginProblem>) => Effect.fail(new PluginError({ problems }))

const describe = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

const isMarked = (pkg: PackageJson): boolean =>
  pkg[PACKAGE_KEY]?.plugin === true || (Array.isArray(pkg.keywords) && pkg.keywords.includes(PLUGIN_KEYWORD))

/** The conditions an `exports` map is read with, in the runtime's order of preference. */
const conditions = (): ReadonlySet<string> =>
  new Set([...("Deno" in globalThis ? ["deno"] : []), "import", "node", "default"])

/** The target of a package's `.` export for these conditions (Node's rule: first matching key wins). */
const exportTarget = (exp: unknown, accepted: ReadonlySet<string>): string | undefined => {
  if (typeof exp === "string") return exp
  if (Array.isArray(exp)) {
    for (const e of exp) {
      const t = exportTarget(e, accepted)
      if (t !== undefined) return t
    }
    return undefined
  }
  if (typeof exp !== "object" || exp === null) return undefined
  const map = exp as Record<string, unknown>
  if (Object.keys(map).some((k) => k.startsWith("."))) return "." in map ? exportTarget(map["."], accepted) : undefined
  for (const [key, value] of Object.entries(map)) {
    if (!accepted.has(key)) continue
    const t = exportTarget(value, accepted)
    if (t !== undefined) return t
  }
  return undefined
}

const entryOf = (pkg: PackageJson): string | undefined => {
  if (pkg.exports !== undefined) return exportTarget(pkg.exports, conditions())
  if (typeof pkg.module === "string") return pkg.module
  return typeof pkg.main === "string" ? pkg.main : "index.js"
}

const nodeModules = Effect.promise(async () => {
  const [fs, path, url] = await Promise.all([import("node:fs/promises"), import("node:path"), import("node:url")])
  return { fs, path, url }
})

type Node = Effect.Effect.Success<typeof nodeModules>

const readJson = (node: Node, file: string): Effect.Effect<PackageJson | undefined, PluginError> =>
  Effect.tryPromise({
    try: () => node.fs.readFile(file, "utf8"),
    catch: (cause) => cause
  }).pipe(
    Effect.map((text): string | undefined => text),
    Effect.catchAll((cause) =>
      (cause as { code?: unknown }).code === "ENOENT" || (cause as { code?: unknown }).code === "ENOTDIR"
        ? Effect.succeed(undefined)
        : failWith([problem(undefined, `cannot read ${file}: ${describe(cause)}`)])
    ),
    Effect.flatMap((text) =>
      text === undefined
        ? Effect.succeed(undefined)
        : Effect.try({
          try: () => JSON.parse(text) as PackageJson,
          catch: (cause) => new PluginError({ problems: [problem(undefined, `${file} is not valid JSON: ${describe(cause)}`)] })
        })
    )
  )

const listDir = (node: Node, dir: string): Effect.Effect<ReadonlyArray<string>> =>
  Effect.promise(() => node.fs.readdir(dir).catch(() => [] as Array<string>))

/** The package folders directly under one node_modules folder (scoped ones included). */
const packageDirs = (node: Node, modules: string): Effect.Effect<ReadonlyArray<string>> =>
  Effect.gen(function*() {
    const out: Array<string> = []
    for (const entry of yield* listDir(node, modules)) {
      if (entry.startsWith(".")) continue
      if (entry.startsWith("@")) {
        for (const inner of yield* listDir(node, node.path.join(modules, entry))) {
          if (!inner.startsWith(".")) out.push(node.path.join(modules, entry, inner))
        }
      } else out.push(node.path.join(modules, entry))
    }
    return out
  })

/**
 * The plugin packages visible from `from`: every `node_modules` folder from there up to the
 * root is read, and a nearer package shadows a farther one of the same name (as Node resolves).
 * A project's `"dstack-ts": { "plugins": [...] }` names packages that must be among them.
 */
export const findPluginPackages = (options: DiscoverOptions = {}): Effect.Effect<ReadonlyArray<PluginPackage>, PluginError> =>
  Effect.gen(function*() {
    const node = yield* nodeModules
    const start = node.path.resolve(options.from ?? process.cwd())
    const found = new Map<string, PluginPackage>()
    const seen = new Set<string>()
    const problems: Array<PluginProblem> = []
    let required: ReadonlyArray<string> | undefined
    for (let dir = start; ; dir = node.path.dirname(dir)) {
      // The nearest package.json that lists required plugins is the project's.
      if (required === undefined) {
        const project = yield* readJson(node, node.path.join(dir, "package.json"))
        const listed = project?.[PACKAGE_KEY]?.plugins
        if (listed !== undefined) {
          if (!Array.isArray(listed) || !listed.every((n) => typeof n === "string")) {
            problems.push(problem(undefined, `${node.path.join(dir, "package.json")}: "${PACKAGE_KEY}.plugins" must be a list of package names`))
            required = []
          } else required = listed
        }
      }
      for (const pkgDir of yield* packageDirs(node, node.path.join(dir, "node_modules"))) {
        const pkg = yield* readJson(node, node.path.join(pkgDir, "package.json"))
        if (pkg === undefined || typeof pkg.name !== "string" || seen.has(pkg.name)) continue
        seen.add(pkg.name)
        if (!isMarked(pkg)) continue
        const version = typeof pkg.version === "string" ? pkg.version : "(no version)"
        const entry = entryOf(pkg)
        if (entry === undefined) {
          problems.push(problem(pkg.name, `${pkg.name}@${version} (${pkgDir}) is marked as a dstack-ts plugin but its package.json exports no "." entry for import`))
          continue
        }
        found.set(pkg.name, { name: pkg.name, version, dir: pkgDir, entry: node.path.resolve(pkgDir, entry) })
      }
      if (node.path.dirname(dir) === dir) break
    }
    for (const name of required ?? []) {
      if (found.has(name)) continue
      problems.push(problem(
        name,
        seen.has(name)
          ? `${name} is listed in "${PACKAGE_KEY}.plugins" but its package.json does not mark it as a dstack-ts plugin ("${PACKAGE_KEY}": { "plugin": true })`
          : `${name} is listed in "${PACKAGE_KEY}.plugins" but is not installed (npm install ${name})`
      ))
    }
    if (problems.length > 0) return yield* failWith(problems)
    return [...found.values()].sort((a, b) => a.name.localeCompare(b.name))
  })

/** Imports each package's entry; its default export (or export `plugin`) is the plugin. */
export const loadPluginPackages = (
  packages: ReadonlyArray<PluginPackage>
): Effect.Effect<ReadonlyArray<DiscoveredPlugin>, PluginError> =>
  Effect.gen(function*() {
    const node = yield* nodeModules
    const results = yield* Effect.forEach(packages, (pkg) =>
      Effect.tryPromise(() => import(node.url.pathToFileURL(pkg.entry).href) as Promise<Record<string, unknown>>).pipe(
        Effect.map((module) => {
          const plugin = module.default ?? module.plugin
          return plugin === undefined
            ? problem(pkg.name, `${pkg.name}@${pkg.version} is marked as a dstack-ts plugin but ${pkg.entry} has no default export: export default definePlugin({...})`)
            : isPlugin(plugin) && plugin.name !== pkg.name
            ? problem(pkg.name, `${pkg.name}@${pkg.version} exports the plugin ${pluginLabel(plugin)}: a plugin's name must be its package's name`)
            : { package: pkg, plugin }
        }),
        Effect.catchAll((e) =>
          Effect.succeed(problem(pkg.name, `cannot load the plugin ${pkg.name}@${pkg.version} from ${pkg.entry}: ${describe(e.error)}`))
        )
      ))
    const problems = results.filter((r): r is PluginProblem => r instanceof PluginProblem)
    if (problems.length > 0) return yield* failWith(problems)
    return results as ReadonlyArray<DiscoveredPlugin>
  })

/** Finds and loads the plugin packages visible from `options.from`. */
export const discover = (options: DiscoverOptions = {}): Effect.Effect<ReadonlyArray<DiscoveredPlugin>, PluginError> =>
  Effect.flatMap(findPluginPackages(options), loadPluginPackages)

/**
 * The plugin host over the caller's own plugins and the discovered ones, validated together:
 * a refused, conflicting or unloadable plugin fails with one PluginError naming the packages
 * and versions.
 *
 * @example
 * const host = yield* PluginDiscovery.load({ include: [dataframe, plot, model] })
 * const stacks = client.stacks({ codecs: host.codecs() })
 */
export const load = (options: LoadOptions = {}): Effect.Effect<PluginHost.PluginHost, PluginError> =>
  Effect.gen(function*() {
    // A package at the very version of a plugin the caller brings is that plugin: it is not
    // imported a second time (the caller's copy may be built where the project's is TypeScript
    // sources, as with the `dstack` command run inside a checkout of its own workspace).
    const label = (p: unknown) => {
      const { name, version } = (p ?? {}) as { name?: unknown; version?: unknown }
      return `${String(name)}@${String(version)}`
    }
    const brought = new Set((options.include ?? []).map(label))
    const packages = (yield* findPluginPackages(options)).filter((pkg) => !brought.has(`${pkg.name}@${pkg.version}`))
    const discovered = yield* loadPluginPackages(packages)
    const names = new Set(discovered.map((d) => (d.plugin as { name?: unknown }).name))
    const included = (options.include ?? []).filter((p) => !names.has((p as { name?: unknown } | undefined)?.name))
    return yield* PluginHost.make([...included, ...discovered.map((d) => d.plugin)], options.host)
  })
