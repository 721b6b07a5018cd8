/**
 * Where the engine gets compute: the backends configured for a project (plus the server's
 * defaults, e.g. `local` in the default build) made by the plugins that contribute them, and
 * the transport that reaches a runner on an instance of each backend type. Backends are made
 * once per configuration and live as long as the engine. A backend whose plugin cannot make it
 * from its configuration is reported (logged, and named with the plugin's message wherever
 * the project's backends are listed for a plan), and does not hide the project's other backends.
 */
import { Cause, Context, Effect, Either, Layer, Option, Scope, SynchronizedRef } from "effect"
import * as Backend from "../ports/Backend.ts"
import * as RunnerTransport from "../ports/RunnerTransport.ts"
import { StateStore } from "../ports/StateStore.ts"
import { PluginHost } from "../plugin/PluginHost.ts"
import type { JobProvisioningData } from "../domain/Job.ts"
import { makeTargets } from "./RemoteAccess.ts"

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

/** A backend of a project that its plugin could not make from its configuration. */
export interface FailedBackend {
  /** The backend type. */
  readonly backend: string
  /** Why, as the plugin said it. */
  readonly message: string
}

/** The backends of a project: those made and ready, and those that could not be made. */
export interface ProjectBackends {
  readonly backends: ReadonlyArray<Backend.Backend>
  readonly failed: ReadonlyArray<FailedBackend>
}

export interface ComputeService {
  /**
   * The project's backends (configured ones and the defaults), made and ready; fails when one
   * of them cannot be made, naming its type.
   */
  readonly backends: (project: string) => Effect.Effect<ReadonlyArray<Backend.Backend>, Backend.BackendError>
  /**
   * The project's backends, each made if it can be: those that cannot are listed with why
   * (and logged). Fails only when the project's configuration cannot be read.
   */
  readonly projectBackends: (project: string) => Effect.Effect<ProjectBackends, Backend.BackendError>
  /** One backend of the project by type; `NotFound` when the project has no such backend. */
  readonly backend: (project: string, type: string) => Effect.Effect<Backend.Backend, Backend.BackendError>
  /** The transport for runners on instances of a backend type. */
  readonly transport: (backendType: string) => Effect.Effect<RunnerTransport.RunnerTransport, RunnerTransport.RunnerTransportError>
  /** Backend types some installed plugin provides. */
  readonly availableTypes: ReadonlyArray<string>
  /**
   * A backend by type from the installed plugins, whether or not a project configures it (the
   * `remote` backend of SSH fleets); `NotFound` naming the type when no plugin provides it.
   */
  readonly pluginBackend: (type: string, config?: unknown) => Effect.Effect<Backend.Backend, Backend.BackendError>
  /**
   * Where the runner on an instance of `project` is and how to log in there. SSH fleet hosts
   * carry their SSH access; for any other instance the project's backend of its type is made
   * first (after a restart nothing else may have made it yet), and its own way to the runner
   * (`Backend.runnerAccess`, or what its plugin's transport learns when it is made, such as a
   * Kubernetes context's credentials) is then known.
   */
  readonly target: (project: string, pd: JobProvisioningData) => Effect.Effect<RunnerTransport.RunnerTarget, RunnerTransport.RunnerTransportError>
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

    // A factory that takes a context (BackendFactory's second parameter) is made per project.
    const makeBackend = (type: string, config: unknown, project?: string): Effect.Effect<Backend.Backend, Backend.BackendError> => {
      const factory = host.backend(type)
      const perProject = Option.isSome(factory) && factory.value.length >= 2 && project !== undefined
      const key = `${type}\u0000${JSON.stringify(config ?? null)}${perProject ? `\u0000${project}` : ""}`
      const make = SynchronizedRef.modifyEffect(backendCache, (cache) => {
        const cached = cache.get(key)
        if (cached) return Effect.succeed([cached, cache] as const)
        if (Option.isNone(factory)) {
          return Backend.fail(MODULE, "backend", "NotFound", `no installed plugin provides the ${type} backend`)
        }
        return (perProject ? factory.value(config ?? {}, { project: project! }) : factory.value(config ?? {})).pipe(
          Scope.extend(scope),
          Effect.map((backend) => [backend, new Map(cache).set(key, backend)] as const)
        )
      })
      // A backend made already is answered without the lock: reaching a runner (Compute.target)
      // asks for its backend every time, and must not wait while another one is being made.
      return Effect.flatMap(SynchronizedRef.get(backendCache), (made) => {
        const known = made.get(key)
        return known !== undefined ? Effect.succeed(known) : make
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

    /** The backends a project has: its configured ones, and the defaults of types it does not configure. */
    const wanted = (project: string) =>
      Effect.map(configured(project), (records) => {
        const types = new Set(records.map((r) => r.type))
        return [
          ...records.map((r) => ({ type: r.type, config: r.config })),
          ...(options.defaultBackends ?? []).filter((d) => !types.has(d.type))
        ]
      })

    // Why each backend (by type and configuration) last failed to be made, so that a plan per
    // placement does not log the same refusal again and again.
    const lastFailure = new Map<string, string>()
    /** Makes a backend, answering why not when its plugin refuses the configuration or breaks. */
    const tryBackend = (project: string, type: string, config: unknown): Effect.Effect<Either.Either<Backend.Backend, FailedBackend>> => {
      const key = () => `${type}\u0000${JSON.stringify(config ?? null)}`
      return makeBackend(type, config, project).pipe(
        Effect.map((backend) => {
          if (lastFailure.size > 0) lastFailure.delete(key())
          return Either.right(backend)
        }),
        Effect.catchAllCause((cause) => {
          if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
          const failure = Cause.failureOption(cause)
          const defect = Cause.dieOption(cause)
          const message = Option.isSome(failure)
            ? failure.value.message ?? failure.value.reason
            : Option.isSome(defect) && defect.value instanceof Error
              ? `${defect.value.name}: ${defect.value.message}`
              : Cause.pretty(cause).split("\n")[0]
          const seen = lastFailure.get(key()) === message
          lastFailure.set(key(), message)
          const failed = Either.left<FailedBackend>({ backend: type, message })
          return seen
            ? Effect.succeed(failed)
            : Effect.as(Effect.logWarning(`project ${project}: the ${type} backend cannot be made from its configuration: ${message}`), failed)
        })
      )
    }
    const projectBackends = (project: string) =>
      Effect.gen(function* () {
        const made = yield* Effect.forEach(yield* wanted(project), (w) => tryBackend(project, w.type, w.config))
        return {
          backends: made.flatMap((m) => (Either.isRight(m) ? [m.right] : [])),
          failed: made.flatMap((m) => (Either.isLeft(m) ? [m.left] : []))
        }
      })

    const backends = (project: string) =>
      Effect.flatMap(projectBackends(project), ({ backends, failed }) =>
        failed.length === 0
          ? Effect.succeed(backends)
          : Backend.fail(MODULE, "backends", "Invalid", failed.map((f) => `backend ${f.backend}: ${f.message}`).join("; "))
      )

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

    // Only the backend asked for is made: another one that cannot be does not stand in the way.
    const backend = (project: string, type: string) =>
      Effect.flatMap(wanted(project), (all) => {
        const found = all.find((w) => w.type === type)
        if (found === undefined) return Backend.fail(MODULE, "backend", "NotFound", `project ${project} has no ${type} backend`)
        return makeBackend(type, found.config, project).pipe(
          Effect.mapError((e) =>
            new Backend.BackendError({ module: e.module, method: e.method, reason: e.reason, message: `backend ${type}: ${e.message ?? e.reason}`, cause: e })
          )
        )
      })

    /** A backend's own SSH access to the runner of `pd` (Backend.runnerAccess), asked of every backend of its type made so far. */
    const madeAccess = (pd: JobProvisioningData) =>
      Effect.map(SynchronizedRef.get(backendCache), (cache) => {
        for (const made of cache.values()) {
          if (made.type !== pd.backend || made.runnerAccess === undefined) continue
          const access = made.runnerAccess(pd)
          if (access !== undefined) return access
        }
        return undefined
      })

    /**
     * The way to the runner of an instance of `project`: its backend is made first (cached once
     * made) and told (`Backend.reached`), so that a server that restarted while the job ran
     * reaches it as the one that started it did. A project that no longer has that backend is
     * answered from the backends made so far (or the provisioning data alone); one whose backend cannot be made, with why,
     * unless a backend made before knows the instance.
     */
    const backendAccess = (project: string, pd: JobProvisioningData): Effect.Effect<RunnerTransport.SshAccess | undefined, RunnerTransport.RunnerTransportError> =>
      Effect.flatMap(Effect.either(backend(project, pd.backend)), (made) => {
        if (Either.isRight(made)) {
          made.right.reached?.(pd)
          const access = made.right.runnerAccess?.(pd)
          return access !== undefined ? Effect.succeed(access) : madeAccess(pd)
        }
        return Effect.flatMap(madeAccess(pd), (access) =>
          access !== undefined || made.left.reason === "NotFound"
            ? Effect.succeed(access)
            : RunnerTransport.fail(MODULE, "target", "Transport", `the runner of instance ${pd.instanceId} cannot be reached: project ${project}'s ${made.left.message ?? made.left.reason}`, made.left))
      })

    return {
      backends,
      projectBackends,
      backend,
      transport,
      availableTypes: host.contributions("backends").map((c) => c.key),
      pluginBackend: (type, config) => makeBackend(type, config ?? {}),
      target: makeTargets(store, backendAccess)
    }
  })

export const layer = (options: ComputeOptions = {}): Layer.Layer<Compute, never, PluginHost | StateStore> =>
  Layer.scoped(Compute, make(options))
