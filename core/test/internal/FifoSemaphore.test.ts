// The engine's FIFO semaphore: permits go to waiters one at a time in arrival order, at most
// `permits` holders at once, and no permit is lost to interruption (before the turn, at the
// moment of hand-over, or while holding it).
import { Deferred, Effect, Fiber } from "effect"
import { describe, expect, it } from "vitest"
import * as FifoSemaphore from "../../src/internal/FifoSemaphore.ts"

describe("FifoSemaphore", () => {
  it("refuses fewer than one permit", () => {
    expect(() => FifoSemaphore.unsafeMake(0)).toThrow(/at least one permit/)
  })

  it("lets at most `permits` hold at once and serves waiters in arrival order", async () => {
    const order: Array<number> = []
    let holding = 0
    let most = 0
    const sem = FifoSemaphore.unsafeMake(3)
    await Effect.runPromise(
      Effect.forEach(
        Array.from({ length: 200 }, (_, i) => i),
        (i) =>
          sem.withPermit(
            Effect.gen(function* () {
              holding++
              most = Math.max(most, holding)
              order.push(i)
              yield* Effect.sleep(i % 7 === 0 ? 2 : 0)
              holding--
            })
          ),
        { concurrency: "unbounded", discard: true }
      )
    )
    expect(most).toBe(3)
    expect(order).toEqual(Array.from({ length: 200 }, (_, i) => i))
    expect(sem.free()).toBe(3)
    expect(sem.waiting()).toBe(0)
  })

  it("gives the permit back when the holder fails or dies", async () => {
    const sem = FifoSemaphore.unsafeMake(1)
    const failed = await Effect.runPromise(Effect.either(sem.withPermit(Effect.fail("boom"))))
    expect(failed._tag).toBe("Left")
    await Effect.runPromise(Effect.exit(sem.withPermit(Effect.die(new Error("defect")))))
    expect(sem.free()).toBe(1)
  })

  it("a waiter interrupted before its turn leaves the queue; the next one gets the permit", async () => {
    const sem = FifoSemaphore.unsafeMake(1)
    const ran: Array<string> = []
    await Effect.runPromise(
      Effect.gen(function* () {
        const gate = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(sem.withPermit(Deferred.await(gate)))
        yield* Effect.yieldNow()
        const a = yield* Effect.fork(sem.withPermit(Effect.sync(() => ran.push("a"))))
        const b = yield* Effect.fork(sem.withPermit(Effect.sync(() => ran.push("b"))))
        yield* Effect.yieldNow()
        expect(sem.waiting()).toBe(2)
        yield* Fiber.interrupt(a)
        expect(sem.waiting()).toBe(1)
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.join(holder)
        yield* Fiber.join(b)
      })
    )
    expect(ran).toEqual(["b"])
    expect(sem.free()).toBe(1)
  })

  it("a waiter interrupted just as it is handed the permit gives it back", async () => {
    const sem = FifoSemaphore.unsafeMake(1)
    await Effect.runPromise(
      Effect.gen(function* () {
        const gate = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(sem.withPermit(Deferred.await(gate)))
        yield* Effect.yieldNow()
        const waiter = yield* Effect.fork(sem.withPermit(Effect.never))
        yield* Effect.yieldNow()
        // Release (which hands the permit to `waiter` synchronously) and interrupt `waiter` in
        // the same turn, before it could run again.
        yield* Effect.sync(() => {
          Effect.runFork(Deferred.succeed(gate, undefined))
        })
        yield* Fiber.interrupt(waiter)
        yield* Fiber.join(holder)
        const third = yield* sem.withPermit(Effect.succeed("third")).pipe(Effect.timeout(1000))
        expect(third).toBe("third")
      })
    )
    expect(sem.free()).toBe(1)
    expect(sem.waiting()).toBe(0)
  })

  it("serves 5,000 waiters through one permit in arrival order", async () => {
    const sem = FifoSemaphore.unsafeMake(1)
    const order: Array<number> = []
    const waiters = 5000
    const t0 = Date.now()
    await Effect.runPromise(
      Effect.forEach(
        Array.from({ length: waiters }, (_, i) => i),
        (i) => sem.withPermit(Effect.zipRight(Effect.yieldNow(), Effect.sync(() => order.push(i)))),
        { concurrency: "unbounded", discard: true }
      )
    )
    expect(order).toEqual(Array.from({ length: waiters }, (_, i) => i))
    expect(sem.free()).toBe(1)
    // Not a timing assertion, a figure for the curious: Effect's semaphore wakes every waiter
    // on each release (quadratic), this one hands the permit to one.
    console.log(`FifoSemaphore: ${waiters} waiters through one permit in ${Date.now() - t0} ms`)
  })
})
