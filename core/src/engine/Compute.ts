/**
 * Where the engine gets compute: the backends configured for a project (plus the server's
 * defaults, e.g. `local` in the default build) made by the plugins that contribute them, and
 * the transport that reaches a runner on an instance of each backend type. Backends are made
 * once per configuration and live as long as the engine.
 */
import { Context, Effect, Layer, Option, Scope, SynchronizedRef } from "effect"
import * as Backend from "../ports/Backend.ts"
import * as RunnerTransport from "../ports/RunnerTransport.ts"
import { StateStore } from "../ports/StateStore.ts"
import { PluginHost } from "../plugin/PluginHost.ts"

/** A backend every project has unless it configures that type itself. */
export interface DefaultBackend {
  readonly type: string
  readonly config?: unknown
}

export interface ComputeOptions {
  /** Backends available to every project, e.g. `[{ type: "local" }]` in the default build. */
  readonly defaultBackends?: ReadonlyArray<DefaultBackend>
  /** Which transport reaches runners of a backend type; by default a transport named like the backend, else `ssh`, else direct. */
  readonly transports?: Readonly<Record<string, string>>
}

export interface ComputeService {
  /** The project's backends (configured ones and the defaults), made and ready. */
  readonly backends: (project: string) => Effect.Effect<ReadonlyArray<Backend.Backend>, Backend.BackendError>
  /** One backend of the project by type; `NotFound` when the project has no such backend. */
  readonly backend: (project: string, type: string) => Effect.Effect<Backend.Backend, Backend.BackendError>
  /** The transport for runners on instances of a backend type. */
  readonly transport: (backendType: string) => Effect.Effect<RunnerTransport.RunnerTransport, RunnerTransport.RunnerTransportError>
  /** Backend types some installed plugin provides. */
  readonly availableTypes: ReadonlyArray<string>
}

export class Compute extends Context.Tag("@dstack-ts/core/engine/Compute")<Compute, ComputeService>() {}

const MODULE = "Compute"

export const make = (options: ComputeOptions = {}): Effect.Effect<ComputeService, never, PluginHost | StateStore | Scope.Scope> =>
  Effect.gen(function* () {
    const host = yield* PluginHost
    const store = yield* StateStore
    const scope = yield* Effect.scope
    const backendCache = yield* SynchronizedRef.make(new Map<string, Backend.Backend>())
    const transportCache = yield* SynchronizedRef.make(new Map<string, RunnerTransport.RunnerTransport>())

    const makeBackend = (type: string, config: unknown): Effect.Effect<Backend.Backend, Backend.BackendError> => {
      const key = `${type}\u0000${JSON.stringify(config ?? null)}`
      return SynchronizedRef.modifyEffect(backendCache, (cache) => {
        const cached = cache.get(key)
        if (cached) return Effect.succeed([cached, cache] as const)
        const factory = host.backend(type)
        if (Option.isNone(factory)) {
          return Backend.fail(MODULE, "backend", "NotFound", `no installed plugin provides the ${type} backend`)
        }
        return factory.value(config ?? {}).pipe(
          Scope.extend(scope),
          Effect.map((backend) => [backend, new Map(cache).set(key, backend)] as const)
        )
      })
    }

    // A project's configured backends are read for every plan: they are cached until the store
    // reports a change to them (`access`: synchronously for this replica's writes, by NOTIFY for
    // another's). A read that overlapped a change is not kept.
    const configuredCache = new Map<string, ReadonlyArray<{ readonly type: string; readonly config: unknown }>>()
    let generation = 0
    yield* store.watch((change) => {
      if (change.kind !== "access") return
      generation++
      configuredCache.clear()
    })
    const configured = (project: string) =>
      Effect.suspend(() => {
        const cached = configuredCache.get(project)
        if (cached !== undefined) return Effect.succeed(cached)
        const asked = generation
        return store.backends.list(project).pipe(
          Effect.tap((records) => Effect.sync(() => asked === generation && configuredCache.set(project, records))),
          Effect.mapError((e) => new Backend.BackendError({ module: MODULE, method: "backends", reason: "Unknown", message: e.message ?? e.reason, cause: e }))
        )
      })

    const backends = (project: string) =>
      Effect.gen(function* () {
        const records = yield* configured(project)
        const types = new Set(records.map((r) => r.type))
        const wanted = [
          ...records.map((r) => ({ type: r.type, config: r.config })),
          ...(options.defaultBackends ?? []).filter((d) => !types.has(d.type))
        ]
        return yield* Effect.forEach(wanted, (w) => makeBackend(w.type, w.config))
      })

    const transport = (backendType: string) => {
      const wanted = options.transports?.[backendType] ??
        (Option.isSome(host.transport(backendType)) ? backendType : Option.isSome(host.transport("ssh")) ? "ssh" : "direct")
      return SynchronizedRef.modifyEffect(transportCache, (cache) => {
        const cached = cache.get(wanted)
        if (cached) return Effect.succeed([cached, cache] as const)
        const factory = host.transport(wanted)
        if (Option.isNone(factory)) {
          return RunnerTransport.fail(MODULE, "transport", "Invalid", `no installed plugin provides the ${wanted} transport (needed for ${backendType} instances)${wanted === "direct" ? ": add @dstack-ts/transport-direct to the build, or a transport named like the backend" : ""}`)
        }
        return factory.value({}).pipe(
          Scope.extend(scope),
          Effect.map((t) => [t, new Map(cache).set(wanted, t)] as const)
        )
      })
    }

    return {
      backends,
      backend: (project, type) =>
        Effect.flatMap(backends(project), (all) => {
          const found = all.find((b) => b.type === type)
          return found ? Effect.succeed(found) : Backend.fail(MODULE, "backend", "NotFound", `project ${project} has no ${type} backend`)
        }),
      transport,
      availableTypes: host.contributions("backends").map((c) => c.key)
    }
  })

export const layer = (options: ComputeOptions = {}): Layer.Layer<Compute, never, PluginHost | StateStore> =>
  Layer.scoped(Compute, make(options))
