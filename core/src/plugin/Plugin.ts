/**
 * The plugin contract: `definePlugin` turns a plugin's description (name, own version, the core
 * range it supports, what it contributes to each port) into a branded, frozen descriptor that
 * the plugin host validates. Contributions are keyed so that the host can detect conflicts.
 */
import type { Effect, Layer, Scope } from "effect"
import type * as Backend from "../ports/Backend.ts"
import type * as BlobStore from "../ports/BlobStore.ts"
import type * as Codec from "../ports/Codec.ts"
import type * as Executor from "../ports/Executor.ts"
import type * as Provider from "../ports/Provider.ts"
import type * as Repo from "../ports/Repo.ts"
import type * as RunnerTransport from "../ports/RunnerTransport.ts"
import type * as StateStore from "../ports/StateStore.ts"
import type { StackViewer } from "../stacks/StackViewer.ts"
import type { AnyRoute } from "../server/Route.ts"

/**
 * The brand on every descriptor. `Symbol.for` so that a plugin built against another copy of
 * core (a nested node_modules) is still recognised; the value is the contract version.
 */
export const PluginTypeId: unique symbol = Symbol.for("@dstack-ts/core/Plugin")
export type PluginTypeId = typeof PluginTypeId

/** The contract version this core writes and understands. */
export const CONTRACT_VERSION = "v1" as const

/** What the server tells a backend factory beside its configuration. */
export interface BackendContext {
  /** The project the backend is made for. */
  readonly project: string
}

/**
 * Makes a backend from its section of the server configuration (decoded by the plugin; an
 * invalid one fails with an `Invalid` BackendError). Scoped: closing the scope releases clients.
 * A factory that declares a second parameter is made once per project and gets `{ project }`
 * there (a pool of machines joined to one project); one made outside a project (a
 * configuration check) gets none.
 */
export type BackendFactory = (
  config: unknown,
  context?: BackendContext
) => Effect.Effect<Backend.Backend, Backend.BackendError, Scope.Scope>

/** Makes a runner transport from its configuration. */
export type TransportFactory = (
  config: unknown
) => Effect.Effect<RunnerTransport.RunnerTransport, RunnerTransport.RunnerTransportError, Scope.Scope>

/** Makes a blob store layer from its driver options (e.g. `{ url }` for redis). */
export type BlobStoreFactory = (options: unknown) => Layer.Layer<BlobStore.BlobStore, BlobStore.BlobStoreError>

/** Makes a state store layer from its options (e.g. a PostgreSQL connection string). */
export type StateStoreFactory = (options: unknown) => Layer.Layer<StateStore.StateStore, StateStore.StateStoreError>

/** What a plugin passes to `definePlugin`. Every contribution map is optional. */
export interface PluginSpec {
  /** The npm package name, e.g. `@acme/dstack-backend-foo`. */
  readonly name: string
  /** The plugin's own version (semver), e.g. `1.4.0`. */
  readonly version: string
  /** The range of `@dstack-ts/core` versions it works with (semver range), e.g. `^0.1.0`. */
  readonly core: string
  readonly description?: string
  /** Backends by backend type (`aws`, `local`, or the plugin's own type). */
  readonly backends?: Readonly<Record<string, BackendFactory>>
  /** Runner transports by name (`local`, `ssh`). */
  readonly transports?: Readonly<Record<string, TransportFactory>>
  /** Code sources by repo type (`local`, `remote`, `virtual`). */
  readonly repos?: Readonly<Record<string, Repo.Repo>>
  /** Encoders/decoders of stack objects, keyed by each codec's `id`, in priority order. */
  readonly codecs?: ReadonlyArray<Codec.Any>
  /** Blob stores by driver name (`redis`, `s3`). */
  readonly blobStores?: Readonly<Record<string, BlobStoreFactory>>
  /** State stores by driver name (`postgres`). */
  readonly stateStores?: Readonly<Record<string, StateStoreFactory>>
  /** Workflow providers by provider name (`bash`, `curl`). */
  readonly providers?: Readonly<Record<string, Provider.Provider>>
  /** How a runner runs jobs, by executor name (`process`, `docker`); used by runner builds. */
  readonly executors?: Readonly<Record<string, Executor.Executor>>
  /** Stack viewer parts by name (`vega-lite`, `table`): the browser script and its assets. */
  readonly viewers?: Readonly<Record<string, StackViewer>>
  /**
   * HTTP routes the server mounts after its own, by a name of the plugin's choosing (a runner
   * pool's join route). A raw route whose request asks to upgrade to a WebSocket goes through
   * the same checks and may hand the connection on as a tunnel (`openTunnel`).
   */
  readonly routes?: Readonly<Record<string, AnyRoute<any>>>
}

/** A validated-to-be plugin: the spec, frozen, with the brand. */
export interface Plugin extends PluginSpec {
  readonly [PluginTypeId]: typeof CONTRACT_VERSION
}

/** The kinds of contribution, as named in `PluginSpec` and in error messages. */
export const CONTRIBUTION_KINDS = [
  "backends",
  "transports",
  "repos",
  "codecs",
  "blobStores",
  "stateStores",
  "providers",
  "executors",
  "viewers",
  "routes"
] as const
export type ContributionKind = (typeof CONTRIBUTION_KINDS)[number]

/** The singular noun of a kind, for messages: `backend "aws"`. */
export const KIND_NOUN: Readonly<Record<ContributionKind, string>> = {
  backends: "backend",
  transports: "transport",
  repos: "repo",
  codecs: "codec",
  blobStores: "blob store",
  stateStores: "state store",
  providers: "provider",
  executors: "executor",
  viewers: "viewer",
  routes: "route"
}

const freezeRecord = <A>(record: A): A => (record === undefined ? record : Object.freeze({ ...record }) as A)

/**
 * Declares a plugin. Returns a frozen, branded descriptor; the plugin host checks it (name,
 * version, core range, conflicts) when the server is built, and reports every problem at once.
 *
 * @example
 * export default definePlugin({
 *   name: "@acme/dstack-backend-foo",
 *   version: "1.0.0",
 *   core: "^0.1.0",
 *   backends: { foo: (config) => FooBackend.make(config) }
 * })
 */
export const definePlugin = (spec: PluginSpec): Plugin => {
  const plugin: Record<string | symbol, unknown> = { ...spec, [PluginTypeId]: CONTRACT_VERSION }
  for (const kind of CONTRIBUTION_KINDS) {
    if (plugin[kind] !== undefined) {
      plugin[kind] = Array.isArray(plugin[kind])
        ? Object.freeze([...(plugin[kind] as Array<unknown>)])
        : freezeRecord(plugin[kind])
    }
  }
  return Object.freeze(plugin) as unknown as Plugin
}

/** True for a descriptor made by `definePlugin` (of any contract version). */
export const isPlugin = (u: unknown): u is Plugin =>
  typeof u === "object" && u !== null && PluginTypeId in u

/** `name@version` as shown in messages; tolerant of malformed descriptors. */
export const pluginLabel = (u: unknown): string => {
  const o = (typeof u === "object" && u !== null ? u : {}) as { name?: unknown; version?: unknown }
  const name = typeof o.name === "string" && o.name !== "" ? o.name : "(unnamed plugin)"
  return typeof o.version === "string" && o.version !== "" ? `${name}@${o.version}` : name
}
