// The PostgreSQL StateStore: the shared conformance suite on a real server, the change feed
// between two replicas (LISTEN/NOTIFY), and failures before any server is involved.
import { expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Queue, Schedule } from "effect"
import { BlobStore, StateStore, createServer } from "@dstack-ts/core"
import type { Server } from "@dstack-ts/core"
import { testSqlJsonColumns, testStateStore } from "@dstack-ts/core/testing"
import postgres from "postgres"
import { describeWith } from "../../../test/support/components.ts"
import { findPostgres, psqlLines } from "../../../test/support/postgres.ts"
import plugin, { PostgresStateStore } from "../src/index.ts"
import { freshDatabase, storeOnFreshDatabase } from "./support.ts"

const pg = await findPostgres()

it.effect("fails with Unavailable when no server answers", () =>
  Effect.gen(function* () {
    const result = yield* Effect.either(
      Effect.scoped(PostgresStateStore.make({ url: "postgres://nobody@127.0.0.1:1/none" }))
    )
    expect(Either.isLeft(result) && result.left.reason).toBe("Unavailable")
  }))

it.effect("rejects invalid plugin options with Invalid", () =>
  Effect.gen(function* () {
    const factory = plugin.stateStores!.postgres
    const result = yield* Effect.either(Layer.build(factory({ url: 42 })).pipe(Effect.scoped))
    expect(Either.isLeft(result) && result.left.reason).toBe("Invalid")
    expect(plugin.name).toBe("@dstack-ts/state-postgres")
  }))

describeWith("postgresql", pg.available, pg.reason, () => {
  testStateStore("postgres", storeOnFreshDatabase(pg.url))

  // The driver before migration 9 stored each JSON value as a JSON string of its text.
  testSqlJsonColumns(
    "postgres",
    "string",
    Effect.gen(function* () {
      const db = yield* freshDatabase(pg.url)
      const sql = yield* Effect.acquireRelease(
        Effect.sync(() => postgres(db.url, { max: 2, onnotice: () => {} })),
        (sql) => Effect.promise(() => sql.end({ timeout: 5 }))
      )
      return PostgresStateStore.makeDriver(sql as never)
    })
  )

  it.live("wakes another replica through LISTEN/NOTIFY", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const db = yield* freshDatabase(pg.url)
        const a = yield* PostgresStateStore.make({ url: db.url })
        const b = yield* PostgresStateStore.make({ url: db.url })
        const queue = yield* b.subscribe
        yield* a.runs.insert({ id: "run-1", project: "p", name: "r", status: "submitted", doc: {} })
        const change = yield* Queue.take(queue).pipe(Effect.timeout("5 seconds"))
        expect(change).toEqual({ kind: "run", id: "run-1", project: "p", version: 1 })
        // The update made by A is seen by B.
        yield* a.runs.update("run-1", { status: "running" })
        expect(yield* Queue.take(queue).pipe(Effect.timeout("5 seconds"))).toEqual({ kind: "run", id: "run-1", project: "p", version: 2 })
        expect((yield* b.runs.get("run-1")).status).toBe("running")
      })
    ))

  it.live("carries peer messages between replicas, in order, to whoever listens; refuses one over NOTIFY's size naming it", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const db = yield* freshDatabase(pg.url)
        const a = yield* PostgresStateStore.make({ url: db.url })
        const b = yield* PostgresStateStore.make({ url: db.url })
        expect(a.peers).toBeDefined()
        const heardByB = yield* Queue.unbounded<string>()
        const heardByA = yield* Queue.unbounded<string>()
        yield* b.peers!.listen((payload) => heardByB.unsafeOffer(payload))
        yield* a.peers!.listen((payload) => heardByA.unsafeOffer(payload))
        const take = (queue: Queue.Queue<string>, n: number) =>
          Effect.forEach(Array.from({ length: n }), () => Queue.take(queue).pipe(Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("no message came") })))
        for (let i = 0; i < 5; i++) yield* a.peers!.publish(`{"n":${i},"text":"ü"}`)
        // Every listener hears it, its sender too, in the order sent, byte for byte.
        const expected = Array.from({ length: 5 }, (_, i) => `{"n":${i},"text":"ü"}`)
        expect(yield* take(heardByB, 5)).toEqual(expected)
        expect(yield* take(heardByA, 5)).toEqual(expected)
        // A payload as large as allowed goes through; one byte more is refused, nothing sent.
        const largest = "x".repeat(a.peers!.maxBytes)
        yield* a.peers!.publish(largest)
        expect(yield* take(heardByB, 1)).toEqual([largest])
        const refused = yield* Effect.flip(a.peers!.publish(`${largest}x`))
        expect(refused.reason).toBe("Invalid")
        expect(refused.message).toContain(`${a.peers!.maxBytes + 1} bytes`)
        yield* a.peers!.publish("after")
        expect(yield* take(heardByB, 1)).toEqual(["after"])
      })
    ))

  it.live("tells another replica's watchers of run writes and of access changes", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const db = yield* freshDatabase(pg.url)
        const a = yield* PostgresStateStore.make({ url: db.url })
        const b = yield* PostgresStateStore.make({ url: db.url })
        const seen = yield* Queue.unbounded<StateStore.Invalidation>()
        yield* b.watch((c) => seen.unsafeOffer(c))
        const next = (matches: (c: StateStore.Invalidation) => boolean) =>
          Queue.take(seen).pipe(
            Effect.repeat({ until: matches }),
            Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("B was not told") })
          )
        yield* a.runs.insert({ id: "run-w", project: "p", name: "r", status: "submitted", doc: {} })
        yield* next((c) => c.kind === "run" && c.id === "run-w")
        yield* a.runs.update("run-w", { status: "running" })
        yield* next((c) => c.kind === "run" && c.id === "run-w")
        yield* a.users.create({ username: "alice", globalRole: "user", tokenHash: "h1" })
        yield* next((c) => c.kind === "access")
        yield* a.users.setTokenHash("alice", "h2")
        yield* next((c) => c.kind === "access")
        yield* a.projects.create({ name: "team", owner: "alice" })
        yield* next((c) => c.kind === "access")
        // A project's backends too (the engine caches them for planning).
        yield* Queue.takeAll(seen)
        yield* a.backends.upsert({ project: "team", type: "local", config: { max_instances: 3 } })
        yield* next((c) => c.kind === "access")
        yield* a.users.delete(["bob"])
        yield* next((c) => c.kind === "access")
        // Changes to logs and nothing about lease-only updates reach B's watchers as documents.
        expect((yield* Queue.takeAll(seen)).pipe((c) => [...c]).every((c) => c.kind === "access" || c.kind === "run")).toBe(true)
      })
    ))

  it.live("a replica's server stops accepting a token deleted through another replica", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const db = yield* freshDatabase(pg.url)
        const admin = "admin-token-for-two-replicas"
        const start = Effect.acquireRelease(
          Effect.promise(() => createServer({ state: PostgresStateStore.layer({ url: db.url }), blobs: BlobStore.layerMemory, allowLocalBlobs: true, adminToken: admin })),
          (server) => Effect.promise(() => server.close())
        )
        const a = yield* start
        const b = yield* start
        const call = (server: Server, path: string, token: string, body: unknown = {}) =>
          Effect.promise(async () => {
            const res = await server.app.request(path, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify(body) })
            return { status: res.status, body: (await res.json()) as any }
          })
        const created = yield* call(a, "/api/users/create", admin, { username: "alice", global_role: "user" })
        const token = created.body.creds.token as string
        for (let i = 0; i < 3; i++) expect((yield* call(b, "/api/users/get_my_user", token)).status).toBe(200)
        expect((yield* call(a, "/api/users/delete", admin, { users: ["alice"] })).status).toBe(200)
        // B learns of it from the database's notification (at the latest when its cache entry
        // expires): poll until it refuses the token.
        yield* call(b, "/api/users/get_my_user", token).pipe(
          Effect.repeat({ until: (r) => r.status === 403, schedule: Schedule.spaced("20 millis") }),
          Effect.timeout("30 seconds")
        )
        expect((yield* call(b, "/api/users/get_my_user", token)).status).toBe(403)
        expect((yield* call(a, "/api/users/get_my_user", token)).status).toBe(403)
      })
    ))

  it.live("bootstraps once when two replicas start at the same moment", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const db = yield* freshDatabase(pg.url)
        const a = yield* PostgresStateStore.make({ url: db.url })
        const b = yield* PostgresStateStore.make({ url: db.url })
        const boot = (s: StateStore.StateStoreService) =>
          StateStore.bootstrap({ adminToken: "same-token-for-both" }).pipe(Effect.provideService(StateStore.StateStore, s))
        const results = yield* Effect.all([boot(a), boot(b), boot(a), boot(b)], { concurrency: "unbounded" })
        expect(results.filter((r) => r.createdAdmin).length).toBe(1)
        expect(results.filter((r) => r.createdProject).length).toBe(1)
        expect((yield* a.users.list()).map((u) => u.username)).toEqual(["admin"])
        expect((yield* b.projects.list()).map((p) => p.projectName)).toEqual(["main"])
      })
    ))

  it.live("maps a statement the server rejects to Invalid, not a crash", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const db = yield* freshDatabase(pg.url)
        const s = yield* PostgresStateStore.make({ url: db.url })
        // A NUL byte is not valid in PostgreSQL text.
        const result = yield* Effect.either(s.runs.insert({ id: "a\u0000b", project: "p", name: "r", status: "s", doc: {} }))
        expect(Either.isLeft(result) && result.left.reason).toBe("Invalid")
        const user = yield* Effect.either(StateStore.authenticate("x").pipe(Effect.provideService(StateStore.StateStore, s)))
        expect(Either.isLeft(user) && user.left.reason).toBe("NotFound")
      })
    ))

  it.live("fails a log poll with Invalid naming a stored row whose source it does not know", () =>
    Effect.scoped(
      Effect.gen(function* () {
        const db = yield* freshDatabase(pg.url)
        const s = yield* PostgresStateStore.make({ url: db.url })
        // Only a hand edit (or a bug) could store this: sources are 1..3.
        const [seq] = yield* Effect.promise(() =>
          psqlLines(
            db.url,
            `INSERT INTO logs (project, job_submission_id, diagnose, ts_ms, source, message) VALUES ('p', 's', false, 1, 9, '\\x00') RETURNING seq`
          )
        )
        const error = yield* Effect.flip(s.logs.poll({ project: "p", jobSubmissionId: "s" }))
        expect(error.reason).toBe("Invalid")
        expect(error.message).toBe(`logs row '${seq}' cannot be read: unknown source 9`)
      })
    ))
})
