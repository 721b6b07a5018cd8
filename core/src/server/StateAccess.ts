// The Access service backed by the StateStore: tokens are looked up by their sha256 hash,
// project roles come from the project's member list, SSH public keys from the user's row. All
// are remembered until the store reports a change to users, tokens, projects or members (`watch`): at once when made through
// this server, on the database's notification when another replica makes it — and for at most
// `CACHE_TTL_MS` in any case, the bound should a notification never arrive.
import { createHash } from "node:crypto"
import { Deferred, Effect, FiberId, Layer } from "effect"
import type { ProjectRole } from "../domain/Project.ts"
import { StateStore } from "../ports/StateStore.ts"
import { Access } from "./Access.ts"
import type { Principal } from "./Access.ts"
import { type ApiError, excerpt, fromStateStore } from "./ApiError.ts"
import * as Eager from "./Eager.ts"
import { userSshKey } from "./UserSshKeys.ts"

/** The longest a cached caller or project role is used without the store saying it changed. */
export const CACHE_TTL_MS = 5_000
/** Past this many entries a cache starts over (unknown tokens are never cached). */
const MAX_ENTRIES = 10_000

interface Cached<A> {
  readonly value: A
  readonly at: number
}

/** A read under way, begun at access epoch `readAt`; concurrent misses of its key await `done`. */
interface Loading<A, E> {
  readonly readAt: number
  readonly done: Deferred.Deferred<A | undefined, E>
}

/** What is remembered under one kind of key: the values read, and the reads under way. */
interface Cache<A, E> {
  readonly values: Map<string, Cached<A>>
  readonly loading: Map<string, Loading<A, E>>
}

const newCache = <A, E>(): Cache<A, E> => ({ values: new Map(), loading: new Map() })

/** sha256 hex, as `hashToken` of the port, but synchronous: it runs on every request. */
const sha256Hex = (token: string): string => createHash("sha256").update(token).digest("hex")

export const layer: Layer.Layer<Access, never, StateStore> = Layer.scoped(
  Access,
  Effect.gen(function* () {
    const store = yield* StateStore
    // Counts the access changes reported; a read is remembered only if none came meanwhile (a
    // read racing a change may have seen the old rows).
    let epoch = 0
    const principals = newCache<Principal, ApiError>()
    const roles = newCache<ReadonlyMap<string, ProjectRole>, ApiError>()
    const sshKeys = newCache<string, ApiError>()
    // Reads under way stay: one begun before the change is not awaited (its epoch is old).
    yield* store.watch((change) => {
      if (change.kind !== "access") return
      epoch++
      principals.values.clear()
      roles.values.clear()
      sshKeys.values.clear()
    })

    /**
     * The cached value under `key`, else `load`'s (remembered unless it is undefined). A hit is
     * an Effect already resolved, as of the call (the router then answers without a fiber);
     * a miss reads when the Effect runs, or waits for the read of the same key already running
     * (begun since the last access change). That read runs to its end even if the request that
     * began it goes away, so that the others waiting on it get their answer.
     */
    const cached = <A, E>(cache: Cache<A, E>, key: string, load: () => Effect.Effect<A | undefined, E>): Effect.Effect<A | undefined, E> => {
      const hit = cache.values.get(key)
      const now = Date.now()
      if (hit !== undefined && now - hit.at < CACHE_TTL_MS) return Effect.succeed<A | undefined>(hit.value)
      return Effect.suspend(() => {
        const running = cache.loading.get(key)
        if (running !== undefined && running.readAt === epoch) return Deferred.await(running.done)
        const loading: Loading<A, E> = { readAt: epoch, done: Deferred.unsafeMake(FiberId.none) }
        const at = Date.now()
        cache.loading.set(key, loading)
        return load().pipe(
          Effect.tap((value) =>
            Effect.sync(() => {
              if (value === undefined || epoch !== loading.readAt) return
              if (cache.values.size >= MAX_ENTRIES) cache.values.clear()
              cache.values.set(key, { value, at })
            })
          ),
          Effect.onExit((exit) =>
            Effect.sync(() => {
              if (cache.loading.get(key) === loading) cache.loading.delete(key)
              Deferred.unsafeDone(loading.done, exit)
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
        ).pipe((members) => Eager.map(members, (m) => m?.get(principal.username))),
      // A key made here (a user's first) changes the users row: the next call reads it again.
      sshPublicKey: (username) =>
        Eager.map(
          cached(sshKeys, username, () => userSshKey(username).pipe(Effect.map((pair) => pair.publicKey), Effect.mapError(fromStateStore), Effect.provideService(StateStore, store))),
          (key) => key!
        )
    }
  })
)
