// The Access service backed by the StateStore: tokens are looked up by their sha256 hash and
// project roles come from the project's member list. Both are remembered until the store
// reports a change to users, tokens, projects or members (`watch`): at once when made through
// this server, on the database's notification when another replica makes it — and for at most
// `CACHE_TTL_MS` in any case, the bound should a notification never arrive.
import { createHash } from "node:crypto"
import { Deferred, Effect, FiberId, Layer } from "effect"
import type { ProjectRole } from "../domain/Project.ts"
import { StateStore } from "../ports/StateStore.ts"
import { Access } from "./Access.ts"
import type { Principal } from "./Access.ts"
import { excerpt, fromStateStore } from "./ApiError.ts"
import * as Eager from "./Eager.ts"

/** The longest a cached caller or project role is used without the store saying it changed. */
export const CACHE_TTL_MS = 5_000
/** Past this many entries a cache starts over (unknown tokens are never cached). */
const MAX_ENTRIES = 10_000

interface Cached<A> {
  readonly value: A
  readonly at: number
}

/** sha256 hex, as `hashToken` of the port, but synchronous: it runs on every request. */
const sha256Hex = (token: string): string => createHash("sha256").update(token).digest("hex")

export const layer: Layer.Layer<Access, never, StateStore> = Layer.scoped(
  Access,
  Effect.gen(function* () {
    const store = yield* StateStore
    // Counts the access changes reported; a read is remembered only if none came meanwhile (a
    // read racing a change may have seen the old rows).
    let epoch = 0
    const principals = new Map<string, Cached<Principal>>()
    const roles = new Map<string, Cached<ReadonlyMap<string, ProjectRole>>>()
    yield* store.watch((change) => {
      if (change.kind !== "access") return
      epoch++
      principals.clear()
      roles.clear()
    })

    /** Loads in flight, by cache and key: concurrent misses of one key share one read. */
    const inFlight = new Map<Map<string, Cached<any>>, Map<string, { readonly readAt: number; readonly done: Deferred.Deferred<any, any> }>>()

    /**
     * The cached value under `key`, else `load`'s (remembered unless it is undefined). A hit is
     * an Effect already resolved, as of the call (the router then answers without a fiber);
     * a miss reads when the Effect runs, or waits for the read of the same key already running
     * (begun since the last access change). That read runs to its end even if the request that
     * began it goes away, so that the others waiting on it get their answer.
     */
    const cached = <A, E>(cache: Map<string, Cached<A>>, key: string, load: () => Effect.Effect<A | undefined, E>): Effect.Effect<A | undefined, E> => {
      const hit = cache.get(key)
      const now = Date.now()
      if (hit !== undefined && now - hit.at < CACHE_TTL_MS) return Effect.succeed<A | undefined>(hit.value)
      return Effect.suspend(() => {
        let loads = inFlight.get(cache)
        if (loads === undefined) inFlight.set(cache, (loads = new Map()))
        const running = loads.get(key)
        if (running !== undefined && running.readAt === epoch) return Deferred.await(running.done as Deferred.Deferred<A | undefined, E>)
        const readAt = epoch
        const at = Date.now()
        const done = Deferred.unsafeMake<A | undefined, E>(FiberId.none)
        const entry = { readAt, done }
        loads.set(key, entry)
        return load().pipe(
          Effect.tap((value) =>
            Effect.sync(() => {
              if (value === undefined || epoch !== readAt) return
              if (cache.size >= MAX_ENTRIES) cache.clear()
              cache.set(key, { value, at })
            })
          ),
          Effect.onExit((exit) =>
            Effect.sync(() => {
              if (loads.get(key) === entry) loads.delete(key)
              Deferred.unsafeDone(done, exit)
            })
          ),
          Effect.uninterruptible
        )
      })
    }

    return {
      // Keyed by the token itself, so that a caller already known costs no hash: the token is
      // in this process's memory for the request anyway, and the store keeps only its hash.
      authenticate: (token) =>
        cached(
          principals,
          token,
          () => store.users.getByTokenHash(sha256Hex(token)).pipe(
            Effect.map((user): Principal | undefined => (user.active ? { username: user.username, globalRole: user.globalRole } : undefined)),
            Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(undefined)),
            Effect.mapError(fromStateStore)
          )
        ),
      projectRole: (principal, projectName) =>
        cached(
          roles,
          projectName,
          () => store.projects.get(projectName).pipe(
            Effect.map((project): ReadonlyMap<string, ProjectRole> => new Map(project.members.map((m) => [m.user.username, m.projectRole]))),
            Effect.mapError((e) =>
              e.reason === "NotFound" ? fromStateStore({ reason: "NotFound", message: `Project ${excerpt(projectName)} does not exist` }) : fromStateStore(e)
            )
          )
        ).pipe((members) => Eager.map(members, (m) => m?.get(principal.username)))
    }
  })
)
