// Builds a dstack-ts server from parts: the plugins, the state store, the blob store. Returns
// the Hono app (serve it with any runtime's adapter, or call `app.request` in tests), the
// Effect runtime that runs its handlers and background work, and what the first start created.
import { Effect, Layer, ManagedRuntime } from "effect"
import { Hono } from "hono"
import type { Context } from "hono"
import { cors } from "hono/cors"
import { BlobStore } from "../ports/BlobStore.ts"
import type { BlobStoreError } from "../ports/BlobStore.ts"
import type { BlobStoreFactory, StateStoreFactory } from "../plugin/Plugin.ts"
import * as PluginHostModule from "../plugin/PluginHost.ts"
import type { PluginError } from "../plugin/PluginError.ts"
import * as ComputeModule from "../engine/Compute.ts"
import type { Compute, ComputeOptions } from "../engine/Compute.ts"
import * as EngineModule from "../engine/Engine.ts"
import type { Engine, EngineOptions } from "../engine/Engine.ts"
import { StateStore, bootstrap } from "../ports/StateStore.ts"
import type { BootstrapResult, StateStoreError } from "../ports/StateStore.ts"
import { CORE_VERSION } from "../plugin/CoreVersion.ts"
import * as RunnerProgram from "../runner/launch/RunnerProgram.ts"
import type { Access } from "./Access.ts"
import { errorResponse, mountRoutes } from "./Router.ts"
import { excerpt, noRoute, serverError } from "./ApiError.ts"
import { openApiDocument } from "./OpenApi.ts"
import type { AnyRoute } from "./Route.ts"
import * as StateAccess from "./StateAccess.ts"
import * as RunCacheModule from "./RunCache.ts"
import type { RunCache } from "./RunCache.ts"
import * as InstanceCacheModule from "./InstanceCache.ts"
import type { InstanceCache } from "./InstanceCache.ts"
import { serverRoutes } from "./routes/server.ts"
import { localBlobsProblem } from "./SharedBlobs.ts"
import { userRoutes } from "./routes/users.ts"
import { projectRoutes } from "./routes/projects.ts"
import { runRoutes } from "./routes/runs.ts"
import { logRoutes } from "./routes/logs.ts"
import { backendRoutes } from "./routes/backends.ts"
import { instanceRoutes } from "./routes/instances.ts"
import { fleetRoutes } from "./routes/fleets.ts"
import { repoRoutes } from "./routes/repos.ts"
import { secretRoutes } from "./routes/secrets.ts"
import * as SecretCipherModule from "../secrets/SecretCipher.ts"
import { type RunnersOnClose, ServerShutdown } from "./Shutdown.ts"
import type { SecretCipherError } from "../secrets/SecretCipher.ts"
import { SecretsPolicy } from "../secrets/ProjectSecrets.ts"
import { workflowRoutes } from "./routes/workflows.ts"
import { notSupportedRoutes } from "./routes/upstream.ts"
import { stackRoutes } from "../stacks/server/StackRoutes.ts"
import * as ServiceRegistryModule from "../services/ServiceRegistry.ts"
import type { ServiceRegistry } from "../services/ServiceRegistry.ts"
import * as AutoscalerModule from "../services/Autoscaler.ts"
import type { Autoscaler } from "../services/Autoscaler.ts"
import { mountServices, type ServicesOptions } from "../services/mount.ts"
import { makeClientAddress } from "../services/ClientAddress.ts"
import { serviceRoutes } from "../services/ServiceRoutes.ts"
import type { UpgradeHandler } from "../runner/adapter/types.ts"
import { resumeWorkflowRuns } from "../workflows/WorkflowRuns.ts"
import { viewerRoutes } from "../stacks/server/Viewer.ts"
import { attachRoutes, attachUpgrade, routePathPattern } from "./AttachRoutes.ts"
import type { RunningSshProxy } from "./SshProxy.ts"
import { type SshProxyAddress, SshProxySettings } from "./SshProxyInfo.ts"

/**
 * A store chosen by name from the build's plugins: `"embedded"`, or `{ driver, options }` with the
 * options that plugin's store takes (snake_case keys, as in a configuration file). A layer is
 * taken as it is (tests, stores built by hand).
 */
export type StoreChoice<S, E> =
  | string
  | { readonly driver: string; readonly options?: unknown }
  | Layer.Layer<S, E>

export interface ServerOptions {
  /**
   * Where durable state lives: a state store of the plugins by name, e.g.
   * `{ driver: "embedded", options: { data_dir } }` (@dstack-ts/state-embedded) or
   * `{ driver: "postgres", options: { url } }` (@dstack-ts/state-postgres).
   */
  readonly state: StoreChoice<StateStore, StateStoreError>
  /**
   * Where code archives and stack attachments live: a blob store of the plugins by name, e.g.
   * `{ driver: "fs", options: { base } }` (@dstack-ts/blob-unstorage).
   */
  readonly blobs: StoreChoice<BlobStore, BlobStoreError>
  /**
   * Start although the state store is shared (PostgreSQL) and the blob store is not (`fs`,
   * `memory`): right for a single server on PostgreSQL, or `fs` on a directory every replica
   * mounts. Without it such a server refuses to start with a `LocalBlobsError`, since a second
   * replica would not find the code archives and stack files this one stores.
   */
  readonly allowLocalBlobs?: boolean | undefined
  /** The first admin's token (`DSTACK_SERVER_ADMIN_TOKEN`); random when absent. */
  readonly adminToken?: string | undefined
  /** The plugins of this build: backends, transports, codecs … (checked against this core). */
  readonly plugins?: ReadonlyArray<unknown>
  /** Backends every project gets, and which transport reaches which backend's runners. */
  readonly compute?: ComputeOptions
  /** Engine tuning: lease length, resync interval, timeouts. */
  readonly engine?: EngineOptions
  /** Origins a browser may call the API from (default `*`: the API uses bearer tokens, not cookies). */
  readonly corsOrigins?: string | ReadonlyArray<string>
  /**
   * The largest JSON request body accepted, in bytes (default 4 MiB): a larger one is answered
   * 413 naming the limit. Uploads (code archives, stack attachments) have their own limits.
   */
  readonly maxBodyBytes?: number | undefined
  /** More routes (a custom build's own API), mounted after the built-in ones. */
  readonly extraRoutes?: ReadonlyArray<AnyRoute<ServerServices>>
  /** The runner build backends start on their instances (`{ entry }`; see RunnerLaunch.RunnerProgram). */
  readonly runner?: RunnerProgram.RunnerProgramConfig
  /**
   * Project secrets: the key they are encrypted with (`key`, or a `keyFile` made with mode 0600
   * on first start; default: `DSTACK_SERVER_SECRETS_KEY`, else secrets are refused with 503),
   * and whether project managers may manage them (upstream's `allow_managers_manage_secrets`).
   */
  readonly secrets?: SecretCipherModule.SecretsKeyOptions & { readonly allowManagers?: boolean | undefined }
  /**
   * The services proxy: how long a request waits for a replica before 503 (`holdTimeoutMs`,
   * default 60 s), and the reverse proxies in front of the server whose `X-Forwarded-For` names
   * the client (`trustedProxies`; createServer rejects with `TrustedProxiesError` on a wrong one).
   */
  readonly services?: ServicesOptions
  /**
   * The SSH proxy upstream's CLI attaches through (SshProxy.ts): it listens on `port` at `bind`
   * (default 127.0.0.1) with the host key in `hostKeyFile` (made on first start), and runs
   * answers advertise `hostname` and `advertisePort` (default: the port listened on) in
   * `job_connection_info.sshproxy_*`. Off when absent.
   */
  readonly sshProxy?: {
    readonly port: number
    readonly bind?: string | undefined
    readonly hostKeyFile: string
    readonly hostname: string
    readonly advertisePort?: number | undefined
    /** How often the proxy's open connections are checked against their job (its end closes them); default 2000 ms. */
    readonly jobCheckIntervalMs?: number | undefined
  }
}

export type ServerServices = StateStore | BlobStore | Access | RunCache | InstanceCache | PluginHostModule.PluginHost | Compute | Engine | ServiceRegistry | Autoscaler

export interface Server {
  readonly app: Hono
  readonly runtime: ManagedRuntime.ManagedRuntime<ServerServices, StateStoreError | BlobStoreError | PluginError | SecretCipherError>
  readonly routes: ReadonlyArray<AnyRoute<any>>
  readonly bootstrap: BootstrapResult
  /** The OpenAPI document served at /api/docs. */
  readonly openapi: Record<string, unknown>
  /**
   * Stops background work and closes the stores. Runners the backends started on this machine
   * are stopped, unless `runners: "leave"` (what `serve` does on SIGTERM/SIGINT: a restarted
   * server on the same state follows their jobs).
   */
  readonly close: (options?: { readonly runners?: RunnersOnClose }) => Promise<void>
  /** Answers requests to upgrade a connection (WebSockets through the services proxy); `serve` hands it to the runtime adapter. */
  readonly upgrade: UpgradeHandler
  /** The SSH proxy, when the `sshProxy` option started one. */
  readonly sshProxy?: RunningSshProxy
}

/**
 * The CORS headers of an answer to anything but a preflight (those `hono/cors` answers), the
 * same as `hono/cors` sets; undefined when there are none. The router puts them in each answer
 * it builds: a middleware in front of every route would make Hono compose a chain per request,
 * and `hono/cors` touched each response after the handler, building every answer twice.
 */
const corsHeaders = (origin: string | ReadonlyArray<string>): ((c: Context) => Readonly<Record<string, string>> | undefined) => {
  if (origin === "*") {
    const all: Readonly<Record<string, string>> = { "access-control-allow-origin": "*" }
    return () => all
  }
  const vary: Readonly<Record<string, string>> = { vary: "Origin" }
  return (c) => {
    const from = c.req.header("origin") ?? ""
    const allowed = typeof origin === "string" ? (origin === from ? from : undefined) : origin.includes(from) ? from : undefined
    return allowed === undefined ? vary : { "access-control-allow-origin": allowed, vary: "Origin" }
  }
}

/** The layer of a `StoreChoice`: a layer as it is, a name through the plugin host. */
const chosenStore = <S, E, F extends (options: unknown) => Layer.Layer<S, E>>(
  kind: "stateStores" | "blobStores",
  option: "state" | "blobs",
  choice: StoreChoice<S, E>
): Layer.Layer<S, E | PluginError, PluginHostModule.PluginHost> => {
  if (Layer.isLayer(choice)) return choice as Layer.Layer<S, E>
  const { driver, options } = typeof choice === "string"
    ? { driver: choice, options: undefined }
    : (choice as { readonly driver: string; readonly options?: unknown })
  return Layer.unwrapEffect(
    Effect.flatMap(PluginHostModule.PluginHost, (host) =>
      Effect.map(PluginHostModule.required<F>(host, kind, driver, `the server's \`${option}\` option`), (factory) => factory(options)))
  )
}

/** Whether Hono's `/api/*` matches the path. */
const isApiPath = (path: string): boolean => path === "/api" || path.startsWith("/api/")

/** The routes every server has. */
export const builtinRoutes: ReadonlyArray<AnyRoute<ServerServices>> = [
  ...serverRoutes,
  ...userRoutes,
  ...projectRoutes,
  ...repoRoutes,
  ...secretRoutes,
  ...runRoutes,
  ...logRoutes,
  ...backendRoutes,
  ...instanceRoutes,
  ...workflowRoutes,
  ...fleetRoutes,
  ...stackRoutes,
  ...viewerRoutes,
  ...serviceRoutes,
  ...attachRoutes
]

/**
 * Creates a server. The first call on an empty state store creates the `admin` user and the
 * `main` project; `bootstrap.adminToken` is then the admin's token (print it once).
 *
 * @example
 * const server = await createServer({
 *   plugins: [stateEmbedded, blobUnstorage, backendLocal, transportLocal],
 *   state: { driver: "embedded", options: { data_dir: "/var/lib/dstack/state" } },
 *   blobs: { driver: "fs", options: { base: "/var/lib/dstack/blobs" } }
 * })
 * await serve(server, { port: 3000 })
 */
export const createServer = async (options: ServerOptions): Promise<Server> => {
  // A wrong trusted proxy is refused before anything starts (TrustedProxiesError names it).
  const clientAddress = makeClientAddress(options.services?.trustedProxies)
  const host = PluginHostModule.layer(options.plugins ?? [])
  const stores = Layer.mergeAll(
    chosenStore<StateStore, StateStoreError, StateStoreFactory>("stateStores", "state", options.state),
    chosenStore<BlobStore, BlobStoreError, BlobStoreFactory>("blobStores", "blobs", options.blobs)
  )
  const runner = options.runner ? RunnerProgram.layer(options.runner) : Layer.empty
  const secrets = Layer.merge(
    SecretCipherModule.layer(options.secrets ?? {}),
    Layer.succeed(SecretsPolicy, { allowManagers: options.secrets?.allowManagers === true })
  )
  let runnersOnClose: RunnersOnClose = "stop"
  const shutdown = Layer.succeed(ServerShutdown, { runners: () => runnersOnClose })
  const base = Layer.mergeAll(Layer.provideMerge(stores, host), runner, secrets, shutdown)
  const compute = Layer.provideMerge(ComputeModule.layer(options.compute ?? {}), base)
  const engine = Layer.provideMerge(EngineModule.layer(options.engine ?? {}), compute)
  const registry = Layer.provideMerge(ServiceRegistryModule.layer, engine)
  const services = Layer.provideMerge(Layer.mergeAll(StateAccess.layer, RunCacheModule.layer, InstanceCacheModule.layer, AutoscalerModule.layer), registry)
  // The proxy's address is known before it listens only when its port is fixed: the settings
  // hold it in a cell filled once the proxy listens.
  const proxySettings = { address: undefined as SshProxyAddress | undefined, hostKeys: undefined as ReadonlyArray<string> | undefined }
  const runtime = ManagedRuntime.make(Layer.merge(services, Layer.succeed(SshProxySettings, proxySettings)))
  let sshProxy: RunningSshProxy | undefined
  try {
    const [stateStore, blobStore] = await runtime.runPromise(Effect.all([StateStore, BlobStore]))
    const refusal = localBlobsProblem(
      { reach: stateStore.reach, choice: options.state },
      { reach: blobStore.reach, choice: options.blobs },
      options.allowLocalBlobs === true
    )
    if (refusal !== undefined) throw refusal
    const boot = await runtime.runPromise(bootstrap(options.adminToken !== undefined ? { adminToken: options.adminToken } : {}))
    await runtime.runPromise(resumeWorkflowRuns)
    const pluginRoutes = (await runtime.runPromise(PluginHostModule.PluginHost)).contributions("routes").map((c) => c.value as AnyRoute<any>)
    const routes: Array<AnyRoute<any>> = [...builtinRoutes, ...(options.extraRoutes ?? []), ...pluginRoutes]
    const openapi = openApiDocument(routes, {
      title: "dstack-ts server API",
      version: CORE_VERSION,
      description: "The dstack HTTP API: POST routes with snake_case JSON bodies and `Authorization: Bearer <token>`."
    })
    const app = new Hono()
    // The SDK runs in browsers too: the API answers cross-origin calls. It authenticates with
    // bearer tokens, never cookies, so any origin may call it unless the build narrows it.
    const origins = options.corsOrigins
    const origin = origins === undefined ? "*" : typeof origins === "string" ? origins : [...origins]
    app.options("/api/*", cors({ origin, allowHeaders: ["Authorization", "Content-Type"], maxAge: 600 }))
    const headers = corsHeaders(origin)
    const apiHeaders = (c: Context) => (isApiPath(c.req.path) ? headers(c) : undefined)
    app.get("/api/docs", (c) => c.json(openapi, 200, headers(c)))
    app.get("/api/docs/openapi.json", (c) => c.json(openapi, 200, headers(c)))
    // Upstream's client routes this server lacks answer "not supported", not 404.
    mountRoutes(app, [...routes, ...notSupportedRoutes(routes)], runtime as ManagedRuntime.ManagedRuntime<ServerServices, never>, { headers, maxBodyBytes: options.maxBodyBytes })
    const { upgrade } = mountServices(app, runtime as ManagedRuntime.ManagedRuntime<ServerServices, never>, options.services ?? {}, clientAddress)
    app.notFound((c) => errorResponse(c, noRoute(`No route ${excerpt(c.req.method)} ${excerpt(c.req.path, 200)}`), apiHeaders(c)))
    app.onError((error, c) => {
      console.error(`[server] unhandled error on ${c.req.method} ${c.req.path}:`, error)
      return errorResponse(c, serverError("Internal server error"), apiHeaders(c))
    })
    if (options.sshProxy !== undefined) {
      const { startSshProxy } = await import("./SshProxy.ts")
      const proxyOptions = options.sshProxy
      sshProxy = await startSshProxy(runtime as ManagedRuntime.ManagedRuntime<ServerServices, never>, {
        port: proxyOptions.port,
        bind: proxyOptions.bind,
        hostKeyFile: proxyOptions.hostKeyFile,
        jobCheckIntervalMs: proxyOptions.jobCheckIntervalMs
      })
      proxySettings.address = { hostname: proxyOptions.hostname, port: proxyOptions.advertisePort ?? sshProxy.port }
      proxySettings.hostKeys = [sshProxy.hostPublicKey]
    }
    const proxy = sshProxy
    return {
      app,
      runtime,
      routes,
      bootstrap: boot,
      openapi,
      upgrade: attachUpgrade(app, upgrade, pluginRoutes.filter((r) => r.kind === "raw").map((r) => routePathPattern(r.path))),
      ...(proxy === undefined ? {} : { sshProxy: proxy }),
      close: async (closeOptions) => {
        runnersOnClose = closeOptions?.runners ?? "stop"
        await proxy?.close()
        await runtime.dispose()
      }
    }
  } catch (error) {
    await sshProxy?.close()
    await runtime.dispose()
    throw error
  }
}

/** Runs an effect on the server's runtime: for custom builds that need the stores directly. */
export const runOn = <A, E>(server: Server, effect: Effect.Effect<A, E, ServerServices>): Promise<A> => server.runtime.runPromise(effect)
