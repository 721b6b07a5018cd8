// The embedded driver over one PGlite: statements take turns, and a long queue of them still
// lets the event loop turn (PGlite resolves each statement as a microtask, so without the
// driver's setImmediate a queue of thousands held timers and sockets off until it drained).
import { PGlite } from "@electric-sql/pglite"
import { Deferred, Effect, Fiber } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { makeDriver } from "../src/EmbeddedStateStore.ts"

let db: PGlite
beforeAll(async () => {
  db = await PGlite.create()
})
afterAll(async () => {
  await db.close()
})

describe("embedded driver", () => {
  it("lets a timer fire while a long queue of statements runs", async () => {
    const driver = await Effect.runPromise(makeDriver(db))
    const statements = 3000
    let done = 0
    let doneWhenTimerFired: number | undefined
    // Queued before the statements: fires at the event loop's first turn.
    setTimeout(() => (doneWhenTimerFired = done), 0)
    await Effect.runPromise(
      Effect.forEach(
        Array.from({ length: statements }, (_, i) => i),
        (i) => driver.query("SELECT $1::integer AS n", [i]).pipe(Effect.tap(() => Effect.sync(() => done++))),
        { concurrency: "unbounded", discard: true }
      )
    )
    expect(done).toBe(statements)
    expect(doneWhenTimerFired).toBeDefined()
    expect(doneWhenTimerFired!).toBeLessThan(statements)
  }, 120_000)

  it("a statement interrupted while it waits for its turn does not hold up the ones after it", async () => {
    const driver = await Effect.runPromise(makeDriver(db))
    const result = await Effect.runPromise(
      Effect.gen(function* () {
        const gate = yield* Deferred.make<void>()
        // A transaction holds the turn until the gate opens.
        const holder = yield* Effect.fork(driver.transaction(() => Deferred.await(gate)))
        yield* Effect.sleep("20 millis")
        const waiting = yield* Effect.fork(driver.query("SELECT 'never' AS n"))
        yield* Effect.sleep("20 millis")
        yield* Fiber.interrupt(waiting).pipe(Effect.fork)
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.join(holder)
        return yield* driver.query("SELECT 'after' AS n")
      })
    )
    expect(result).toEqual([{ n: "after" }])
  })

  it("runs statements one at a time, in the order they were queued", async () => {
    const driver = await Effect.runPromise(makeDriver(db))
    await Effect.runPromise(driver.query("CREATE TABLE turns (n integer)"))
    await Effect.runPromise(
      Effect.forEach(Array.from({ length: 200 }, (_, i) => i), (i) => driver.query("INSERT INTO turns VALUES ($1)", [i]), {
        concurrency: "unbounded",
        discard: true
      })
    )
    const rows = await Effect.runPromise(driver.query("SELECT n FROM turns"))
    expect(rows.map((r) => Number(r.n))).toEqual(Array.from({ length: 200 }, (_, i) => i))
  })
})
