/**
 * The plugin host: validates a server build's plugins (brand, name, version, core range,
 * duplicates, conflicting contributions), reports every problem in one PluginError, and then
 * answers lookups (`backend("aws")`, `codecs` …) for the rest of core.
 */
import { Context, Effect, Layer, Option } from "effect"
import semver from "semver"
import * as Codec from "../ports/Codec.ts"
import type * as Executor from "../ports/Executor.ts"
import * as Provider from "../ports/Provider.ts"
import * as Repo from "../ports/Repo.ts"
import { CORE_VERSION } from "./CoreVersion.ts"
import {
  type BackendFactory,
  type BlobStoreFactory,
  CONTRACT_VERSION,
  CONTRIBUTION_KINDS,
  type ContributionKind,
  isPlugin,
  KIND_NOUN,
  type Plugin,
  pluginLabel,
  PluginTypeId,
  type StateStoreFactory,
  type TransportFactory
} from "./Plugin.ts"
import { PluginError, PluginProblem, type PluginProblemReason } from "./PluginError.ts"

/** One contribution and the plugin it came from. */
export interface Contribution<A> {
  readonly kind: ContributionKind
  readonly key: string
  readonly value: A
  readonly plugin: { readonly name: string; readonly version: string }
}

/** The validated plugins of a server build and what they contribute. */
export interface PluginHost {
  /** The core version the ranges were checked against. */
  readonly coreVersion: string
  readonly plugins: ReadonlyArray<Plugin>
  readonly backend: (type: string) => Option.Option<BackendFactory>
  readonly transport: (name: string) => Option.Option<TransportFactory>
  readonly repo: (type: string) => Option.Option<Repo.Repo>
  readonly blobStore: (driver: string) => Option.Option<BlobStoreFactory>
  readonly stateStore: (driver: string) => Option.Option<StateStoreFactory>
  readonly provider: (name: string) => Option.Option<Provider.Provider>
  readonly executor: (name: string) => Option.Option<Executor.Executor>
  /** Every codec, in plugin order then each plugin's own order (the priority order). */
  readonly codecs: () => ReadonlyArray<Codec.Any>
  /** Every contribution of a kind with its plugin, in plugin order: for listings and messages. */
  readonly contributions: (kind: ContributionKind) => ReadonlyArray<Contribution<unknown>>
}

/** The tag of the plugin host. */
export const PluginHost: Context.Tag<PluginHost, PluginHost> = Context.GenericTag<PluginHost>(
  "@dstack-ts/core/PluginHost"
)

export interface PluginHostOptions {
  /** The core version to check ranges against; defaults to this package's version. */
  readonly coreVersion?: string
}

// npm's package-name rule (lowercase, optional scope, URL-safe characters).
const PACKAGE_NAME = /^(?:@[a-z0-9-~][a-z0-9-._~]*\/)?[a-z0-9-~][a-z0-9-._~]*$/
// Contribution keys are identifiers that appear in YAML and URLs: `aws`, `dataframe/arrow`.
const CONTRIBUTION_KEY = /^[a-z0-9][a-z0-9._\-/]*$/

const show = (u: unknown): string => (typeof u === "string" ? JSON.stringify(u) : String(u))

/** The entries of one contribution kind of a plugin, as `[key, value]` pairs. */
const entriesOf = (plugin: Plugin, kind: ContributionKind): ReadonlyArray<readonly [string, unknown]> => {
  const section = plugin[kind] as unknown
  if (section === undefined) return []
  if (kind === "codecs") {
    return Array.isArray(section)
      ? section.map((codec) => [typeof codec?.id === "string" ? codec.id : "", codec] as const)
      : []
  }
  return typeof section === "object" && section !== null ? Object.entries(section) : []
}

const isFunction = (u: unknown): boolean => typeof u === "function"
const hasMethods = (...names: ReadonlyArray<string>) => (u: unknown): boolean =>
  typeof u === "object" && u !== null && names.every((n) => typeof (u as Record<string, unknown>)[n] === "function")

/** What each kind's values must look like, checked cheaply at build time. */
const SHAPE: Readonly<Record<ContributionKind, readonly [(u: unknown) => boolean, string]>> = {
  backends: [isFunction, "a function from the backend's config to an Effect of a Backend"],
  transports: [isFunction, "a function from the transport's config to an Effect of a RunnerTransport"],
  blobStores: [isFunction, "a function from driver options to a BlobStore layer"],
  stateStores: [isFunction, "a function from options to a StateStore layer"],
  repos: [hasMethods("pack", "materialize"), "a Repo (with pack and materialize)"],
  codecs: [
    (u) => hasMethods("accepts", "encode", "decode", "canDecode", "sniff", "fromFile")(u) && Array.isArray((u as { fileTypes?: unknown }).fileTypes),
    "a Codec (with fileTypes, accepts, encode, canDecode, decode, sniff, fromFile: make it with Codec.make)"
  ],
  providers: [hasMethods("createJobs"), "a Provider (with createJobs)"],
  executors: [hasMethods("start"), "an Executor (with start)"],
  viewers: [
    (u) => typeof u === "object" && u !== null && typeof (u as { script?: unknown }).script === "string",
    "a stack viewer (with a script)"
  ],
  routes: [
    (u) => typeof u === "object" && u !== null && typeof (u as { path?: unknown }).path === "string" &&
      typeof (u as { method?: unknown }).method === "string" && typeof (u as { handler?: unknown }).handler === "function",
    "a route (made with jsonRoute or rawRoute)"
  ]
}

/**
 * Checks a set of plugins and returns every problem found (empty when all are accepted).
 * Exposed for tools (`dstack plugins check`); the host fails with these in one PluginError.
 */
export const validate = (
  candidates: ReadonlyArray<unknown>,
  options: PluginHostOptions = {}
): ReadonlyArray<PluginProblem> => {
  const coreVersion = options.coreVersion ?? CORE_VERSION
  const problems: Array<PluginProblem> = []
  const add = (reason: PluginProblemReason, plugin: string | undefined, message: string) =>
    problems.push(new PluginProblem({ reason, ...(plugin === undefined ? {} : { plugin }), message }))

  // 1. Each plugin on its own.
  candidates.forEach((candidate, index) => {
    const label = pluginLabel(candidate)
    const name = typeof (candidate as { name?: unknown })?.name === "string"
      ? (candidate as { name: string }).name
      : undefined
    if (!isPlugin(candidate)) {
      add(
        "NotAPlugin",
        name,
        `plugin #${index + 1} (${label}) is not a plugin descriptor: export the result of definePlugin(...) from @dstack-ts/core`
      )
      return
    }
    if (candidate[PluginTypeId] !== CONTRACT_VERSION) {
      add(
        "UnsupportedContract",
        name,
        `${label} uses plugin contract ${show(candidate[PluginTypeId])}, but this host (core ${coreVersion}) understands ${CONTRACT_VERSION}`
      )
      return
    }
    if (typeof candidate.name !== "string" || !PACKAGE_NAME.test(candidate.name)) {
      add("InvalidName", name, `plugin #${index + 1} has name ${show(candidate.name)}, which is not a valid npm package name`)
    }
    if (typeof candidate.version !== "string" || semver.valid(candidate.version) === null) {
      add("InvalidVersion", name, `${label} has version ${show(candidate.version)}, which is not a semver version (like 1.2.3)`)
    }
    if (typeof candidate.core !== "string" || semver.validRange(candidate.core) === null) {
      add("InvalidCoreRange", name, `${label} gives core range ${show(candidate.core)}, which is not a semver range (like ^0.1.0)`)
    } else if (!semver.satisfies(coreVersion, candidate.core, { includePrerelease: true })) {
      add(
        "IncompatibleCore",
        name,
        `${label} requires @dstack-ts/core ${candidate.core}, but this host runs core ${coreVersion}`
      )
    }
    for (const kind of CONTRIBUTION_KINDS) {
      const section = candidate[kind] as unknown
      if (section === undefined) continue
      const wantsArray = kind === "codecs"
      if (wantsArray ? !Array.isArray(section) : typeof section !== "object" || section === null || Array.isArray(section)) {
        add(
          "InvalidContribution",
          name,
          `${label} gives ${kind} as ${Array.isArray(section) ? "an array" : typeof section}, expected ${wantsArray ? "an array of codecs" : `an object keyed by ${KIND_NOUN[kind]} name`}`
        )
        continue
      }
      const [isShape, expected] = SHAPE[kind]
      for (const [key, value] of entriesOf(candidate, kind)) {
        if (!CONTRIBUTION_KEY.test(key)) {
          add("InvalidContribution", name, `${label} contributes ${KIND_NOUN[kind]} ${show(key)}: the name must be lowercase letters, digits, '.', '_', '-' or '/'`)
        } else if (!isShape(value)) {
          add("InvalidContribution", name, `${label} contributes ${KIND_NOUN[kind]} ${show(key)} that is not ${expected}`)
        }
      }
    }
  })

  // 2. Between plugins: the same plugin twice, then two plugins claiming one key.
  const branded = candidates.filter(
    (c): c is Plugin => isPlugin(c) && c[PluginTypeId] === CONTRACT_VERSION && typeof c.name === "string"
  )
  const byName = new Map<string, Array<Plugin>>()
  for (const p of branded) byName.set(p.name, [...(byName.get(p.name) ?? []), p])
  for (const [name, copies] of byName) {
    if (copies.length > 1) {
      const versions = copies.map((p) => String(p.version))
      add(
        "Duplicate",
        name,
        `${name} is installed ${copies.length === 2 ? "twice" : `${copies.length} times`} (versions ${versions.join(" and ")}): keep one`
      )
    }
  }
  for (const kind of CONTRIBUTION_KINDS) {
    const claims = new Map<string, Array<Plugin>>()
    for (const p of branded) {
      for (const [key] of entriesOf(p, kind)) {
        if (key === "") continue
        const list = claims.get(key) ?? []
        // A duplicate plugin is reported once as Duplicate, not again for each contribution.
        if (!list.some((q) => q.name === p.name)) claims.set(key, [...list, p])
      }
    }
    for (const [key, owners] of claims) {
      if (owners.length > 1) {
        add(
          "Conflict",
          owners[1].name,
          `${KIND_NOUN[kind]} ${show(key)} is contributed by both ${owners.map(pluginLabel).join(" and ")}: remove one of them`
        )
      }
    }
  }
  return problems
}

/**
 * Validates the plugins and builds the host, or fails with one PluginError listing every
 * problem.
 *
 * @example
 * const host = yield* PluginHost.make([localBackend, sshTransport, dataframeCodecs])
 * const makeBackend = host.backend("local")
 */
export const make = (
  plugins: ReadonlyArray<unknown>,
  options: PluginHostOptions = {}
): Effect.Effect<PluginHost, PluginError> =>
  Effect.suspend(() => {
    const problems = validate(plugins, options)
    if (problems.length > 0) return Effect.fail(new PluginError({ problems }))
    const accepted = plugins as ReadonlyArray<Plugin>
    const index = new Map<ContributionKind, Map<string, Contribution<unknown>>>()
    for (const kind of CONTRIBUTION_KINDS) {
      const map = new Map<string, Contribution<unknown>>()
      for (const plugin of accepted) {
        for (const [key, value] of entriesOf(plugin, kind)) {
          map.set(key, { kind, key, value, plugin: { name: plugin.name, version: plugin.version } })
        }
      }
      index.set(kind, map)
    }
    const lookup = <A>(kind: ContributionKind) => (key: string): Option.Option<A> =>
      Option.map(Option.fromNullable(index.get(kind)!.get(key)), (c) => c.value as A)
    // Each codec carries the package that contributed it, for the payloads it writes.
    const codecs = Object.freeze([...index.get("codecs")!.values()].map((c) => Codec.contributedBy(c.value as Codec.Any, c.plugin.name)))
    return Effect.succeed(PluginHost.of({
      coreVersion: options.coreVersion ?? CORE_VERSION,
      plugins: Object.freeze([...accepted]),
      backend: lookup<BackendFactory>("backends"),
      transport: lookup<TransportFactory>("transports"),
      repo: lookup<Repo.Repo>("repos"),
      blobStore: lookup<BlobStoreFactory>("blobStores"),
      stateStore: lookup<StateStoreFactory>("stateStores"),
      provider: lookup<Provider.Provider>("providers"),
      executor: lookup<Executor.Executor>("executors"),
      codecs: () => codecs,
      contributions: (kind) => [...index.get(kind)!.values()]
    }))
  })

/** The host as a layer; building it fails with the PluginError when any plugin is refused. */
export const layer = (
  plugins: ReadonlyArray<unknown>,
  options: PluginHostOptions = {}
): Layer.Layer<PluginHost, PluginError> => Layer.effect(PluginHost, make(plugins, options))

/** Provides the Codec port's `Codecs` (the installed codecs) from the host. */
export const layerCodecs: Layer.Layer<Codec.Codecs, never, PluginHost> = Layer.effect(
  Codec.Codecs,
  Effect.map(PluginHost, (host) => host.codecs())
)

/** Provides the Provider port's `Providers` (workflow providers by name) from the host. */
export const layerProviders: Layer.Layer<Provider.Providers, never, PluginHost> = Layer.effect(
  Provider.Providers,
  Effect.map(PluginHost, (host) =>
    new Map(host.contributions("providers").map((c) => [c.key, c.value as Provider.Provider])))
)

/** Provides the Repo port's `Repos` (code sources by repo type) from the host. */
export const layerRepos: Layer.Layer<Repo.Repos, never, PluginHost> = Layer.effect(
  Repo.Repos,
  Effect.map(PluginHost, (host) => new Map(host.contributions("repos").map((c) => [c.key, c.value as Repo.Repo])))
)

/**
 * The contribution `key` of `kind`, or a PluginError (`Missing`) that says what asked for it and
 * lists what the installed plugins do provide of that kind, each with its package and version.
 *
 * @example
 * const factory = yield* PluginHost.required(host, "stateStores", "postgres", "the server's `state`")
 */
export const required = <A = unknown>(
  host: PluginHost,
  kind: ContributionKind,
  key: string,
  neededFor: string
): Effect.Effect<A, PluginError> => {
  const found = host.contributions(kind).find((c) => c.key === key)
  if (found !== undefined) return Effect.succeed(found.value as A)
  const installed = host.contributions(kind).map((c) => `${show(c.key)} (${c.plugin.name}@${c.plugin.version})`)
  return Effect.fail(
    new PluginError({
      problems: [
        new PluginProblem({
          reason: "Missing",
          message: `${neededFor} names the ${KIND_NOUN[kind]} ${show(key)}, which no plugin of this build provides; ${
            installed.length === 0 ? `no plugin provides any ${KIND_NOUN[kind]}` : `installed: ${installed.join(", ")}`
          }`
        })
      ]
    })
  )
}
