// A database that accepts connections and never answers: the store behind a fault proxy
// (test/support/fault-proxy.ts) in `blackhole` mode fails its calls as `Unavailable` instead of
// waiting forever, then works again on fresh connections once the database answers (the
// swallowed connections never do) and hears other replicas' changes again; a statement that runs past `query_timeout` is cancelled by
// the database; a store cannot start against a silent database. The same over TLS (`sslmode`),
// on a PostgreSQL of its own that accepts TLS: the silence watchdog sees the plaintext there too.
import { expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Queue } from "effect"
import postgres from "postgres"
import { describeWith } from "../../../test/support/components.ts"
import { startFaultProxy, type FaultProxy } from "../../../test/support/fault-proxy.ts"
import { findPostgres, findTlsPostgres, psqlLines } from "../../../test/support/postgres.ts"
import plugin, { PostgresStateStore } from "../src/index.ts"
import { freshDatabase } from "./support.ts"

const pg = await findPostgres()
const pgTls = await findTlsPostgres()

it.effect("refuses a query_timeout or connect_timeout that is not a positive number, naming it", () =>
  Effect.gen(function* () {
    const factory = plugin.stateStores!.postgres
    for (const options of [{ url: "postgres://x@h/d", query_timeout: 0 }, { url: "postgres://x@h/d", connect_timeout: "ten" }]) {
      const result = yield* Effect.either(Layer.build(factory(options)).pipe(Effect.scoped))
      expect(Either.isLeft(result) && result.left.reason).toBe("Invalid")
      expect(Either.isLeft(result) && result.left.message).toMatch(Object.keys(options)[1]!)
    }
  }))

/** The database's URL with its host and port replaced by the proxy's. */
const viaProxy = (url: string, proxy: FaultProxy): string => {
  const u = new URL(url)
  u.hostname = "127.0.0.1"
  u.port = String(proxy.port)
  return u.toString()
}

const proxyFor = (url: string) =>
  Effect.acquireRelease(
    Effect.promise(() => {
      const target = new URL(url)
      return startFaultProxy({ targetHost: target.hostname, targetPort: Number(target.port || 5432) })
    }),
    (proxy) => Effect.promise(() => proxy.close())
  )

/** Fails the test when `effect` has not ended after `seconds` (a hang, not a slow answer). */
const notHanging = <A, E>(effect: Effect.Effect<A, E>, seconds: number) =>
  effect.pipe(Effect.timeoutFail({ duration: `${seconds} seconds`, onTimeout: () => new Error(`still waiting after ${seconds} s`) }))

describeWith("postgresql", pg.available, pg.reason, () => {
  it.live("fails calls as Unavailable while the database never answers, and works again when it does", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const db = yield* freshDatabase(pg.url)
        const proxy = yield* proxyFor(db.url)
        const store = yield* PostgresStateStore.make({ url: viaProxy(db.url, proxy), queryTimeout: 1, connectTimeout: 1 })
        yield* store.users.create({ username: "ann", globalRole: "admin", tokenHash: "h" })
        const changes = yield* store.subscribe
        // Another replica, on a path to the database that stays up.
        const other = yield* PostgresStateStore.make({ url: db.url })

        proxy.setMode({ kind: "blackhole" })
        // On a pooled connection (swallowed with the others), then again on a fresh one.
        for (const _ of [1, 2]) {
          const result = yield* notHanging(Effect.either(store.users.get("ann")), 30)
          expect(Either.isLeft(result) && result.left.reason, JSON.stringify(result)).toBe("Unavailable")
          expect(Either.isLeft(result) && result.left.message).toMatch(/did not answer|CONNECT_TIMEOUT|did not complete/)
        }
        const write = yield* notHanging(Effect.either(store.users.create({ username: "bob", globalRole: "user", tokenHash: "b" })), 30)
        expect(Either.isLeft(write) && write.left.reason).toBe("Unavailable")

        proxy.setMode({ kind: "pass" })
        // Fresh connections reach the database; the swallowed ones stay silent and are given up.
        const back = yield* notHanging(
          store.users.get("ann").pipe(Effect.retry({ times: 20, while: (e) => e.reason === "Unavailable" })),
          60
        )
        expect(back.username).toBe("ann")
        yield* store.users.create({ username: "bob", globalRole: "user", tokenHash: "b" })
        expect((yield* store.users.list()).map((u) => u.username).sort()).toEqual(["ann", "bob"])
        // The LISTEN connection was swallowed too: its heartbeat finds it silent and it is
        // replaced, so a change made by the other replica reaches this one again.
        yield* Queue.takeAll(changes)
        const heard = yield* Effect.gen(function* () {
          yield* other.runs.insert({ id: `run-${Date.now()}`, project: "p", name: `r-${Date.now()}`, status: "submitted", doc: {} })
          return yield* Queue.take(changes).pipe(Effect.timeout("2 seconds"))
        }).pipe(Effect.retry({ times: 30 }))
        expect(heard.kind).toBe("run")
      })
    ), 120_000)

  it.live("cannot start against a database that accepts connections and never answers", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const db = yield* freshDatabase(pg.url)
        const proxy = yield* proxyFor(db.url)
        proxy.setMode({ kind: "blackhole" })
        const result = yield* notHanging(
          Effect.either(Effect.scoped(PostgresStateStore.make({ url: viaProxy(db.url, proxy), connectTimeout: 1 }))),
          30
        )
        expect(Either.isLeft(result) && result.left.reason).toBe("Unavailable")
        expect(Either.isLeft(result) && result.left.message).toMatch(/CONNECT_TIMEOUT/)
      })
    ), 60_000)

  it.live("lets the database cancel a statement that runs past query_timeout", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const db = yield* freshDatabase(pg.url)
        // The store's own statements are short; a lock held by another session makes one wait.
        const store = yield* PostgresStateStore.make({ url: db.url, queryTimeout: 1 })
        yield* store.users.create({ username: "ann", globalRole: "admin", tokenHash: "h" })
        const other = postgres(db.url, { max: 1, onnotice: () => {} })
        yield* Effect.addFinalizer(() => Effect.promise(() => other.end({ timeout: 1 })))
        const locked = yield* Effect.promise(() => other.reserve())
        yield* Effect.addFinalizer(() => Effect.sync(() => locked.release()))
        yield* Effect.promise(() => locked.unsafe("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
        const result = yield* notHanging(Effect.either(store.users.get("ann")), 30)
        yield* Effect.promise(() => locked.unsafe("ROLLBACK"))
        expect(Either.isLeft(result) && result.left.reason, JSON.stringify(result)).toBe("Unavailable")
        expect(Either.isLeft(result) && result.left.message).toMatch(/statement timeout/)
        expect((yield* store.users.get("ann")).username).toBe("ann")
      })
    ), 60_000)
})

/** TLS connections (and plain ones) of clients to database `name`, as the server sees them, this psql's own left out. */
const connectionsTo = (serverUrl: string, name: string) =>
  Effect.promise(() =>
    psqlLines(serverUrl, `SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = '${name}' AND a.pid <> pg_backend_pid()`)
  ).pipe(Effect.map((lines) => ({ tls: lines.filter((l) => l === "t").length, plain: lines.filter((l) => l === "f").length })))

describeWith("postgresql with TLS", pgTls.available, pgTls.reason, () => {
  it.live("over TLS (sslmode=require), a connection that owes an answer and stays silent is closed by the watchdog, a fresh one gives up at connect_timeout, and the store works again after", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const db = yield* freshDatabase(pgTls.url)
        const proxy = yield* proxyFor(db.url)
        const store = yield* PostgresStateStore.make({ url: `${viaProxy(db.url, proxy)}?sslmode=require`, queryTimeout: 1, connectTimeout: 1 })
        yield* store.users.create({ username: "ann", globalRole: "admin", tokenHash: "h" })
        // Every connection of the store is a TLS one.
        const seen = yield* connectionsTo(pgTls.url, db.name)
        expect(seen.tls, JSON.stringify(seen)).toBeGreaterThan(0)
        expect(seen.plain, JSON.stringify(seen)).toBe(0)

        proxy.setMode({ kind: "blackhole" })
        // On a pooled TLS connection: the watchdog closes it after query_timeout + 2 s (without it
        // only the outer bound of the call, "did not complete … within 6 s", would end the wait).
        const pooled = yield* notHanging(Effect.either(store.users.get("ann")), 30)
        expect(Either.isLeft(pooled) && pooled.left.reason, JSON.stringify(pooled)).toBe("Unavailable")
        expect(Either.isLeft(pooled) && pooled.left.message).toMatch(/did not answer for 3 s \(query_timeout 1 s \+ 2 s\)/)
        // On a fresh connection: TLS is not set up within connect_timeout.
        const fresh = yield* notHanging(Effect.either(store.users.get("ann")), 30)
        expect(Either.isLeft(fresh) && fresh.left.reason, JSON.stringify(fresh)).toBe("Unavailable")
        expect(Either.isLeft(fresh) && fresh.left.message).toMatch(/no TLS connection within 1 s \(connect_timeout\)|did not answer/)

        proxy.setMode({ kind: "pass" })
        const back = yield* notHanging(
          store.users.get("ann").pipe(Effect.retry({ times: 20, while: (e) => e.reason === "Unavailable" })),
          60
        )
        expect(back.username).toBe("ann")
      })
    ), 120_000)

  it.live("checks the certificate under sslmode=verify-full (a self-signed one is refused, saying why) and falls back to plain under sslmode=prefer only when the server declines TLS", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const db = yield* freshDatabase(pgTls.url)
        const refused = yield* notHanging(Effect.either(Effect.scoped(PostgresStateStore.make({ url: `${db.url}?sslmode=verify-full`, connectTimeout: 5 }))), 30)
        expect(Either.isLeft(refused) && refused.left.reason).toBe("Unavailable")
        expect(Either.isLeft(refused) && refused.left.message).toMatch(/TLS connection to PostgreSQL at 127\.0\.0\.1:\d+: .*self[- ]signed/i)
        // prefer, on a server that accepts TLS: TLS.
        const preferring = yield* PostgresStateStore.make({ url: `${db.url}?sslmode=prefer` })
        yield* preferring.users.create({ username: "ann", globalRole: "admin", tokenHash: "h" })
        const seen = yield* connectionsTo(pgTls.url, db.name)
        expect(seen.tls).toBeGreaterThan(0)
        // require, on a server without TLS (the other cluster): refused, saying so.
        if (pg.available) {
          const plainDb = yield* freshDatabase(pg.url)
          const noTls = yield* notHanging(Effect.either(Effect.scoped(PostgresStateStore.make({ url: `${plainDb.url}?sslmode=require`, connectTimeout: 5 }))), 30)
          expect(Either.isLeft(noTls) && noTls.left.message).toMatch(/does not accept TLS/)
          const preferPlain = yield* PostgresStateStore.make({ url: `${plainDb.url}?sslmode=prefer` })
          yield* preferPlain.users.create({ username: "bob", globalRole: "user", tokenHash: "b" })
          expect((yield* preferPlain.users.get("bob")).username).toBe("bob")
        }
      })
    ), 120_000)
})
