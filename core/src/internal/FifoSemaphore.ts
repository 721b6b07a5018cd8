/**
 * A counting semaphore whose waiters get permits one at a time, first come first served.
 *
 * Effect's own semaphore wakes every waiter when a permit comes back and lets them race for
 * it (the losers queue up again), so each release costs time in the number of waiters: with
 * thousands of fibers waiting (a server that took thousands of queued runs at once) the event
 * loop stalled for seconds at a time. Here a release hands its permit to the oldest waiter
 * directly: O(1) per hand-over.
 *
 * Interruption is safe both ways: a waiter interrupted before its turn leaves the queue; one
 * interrupted just as it was handed a permit gives the permit back.
 */
import { Effect } from "effect"

export interface FifoSemaphore {
  /** Runs `effect` holding one permit (waiting for it in turn), and gives it back however it ends. */
  readonly withPermit: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Permits free right now. */
  readonly free: () => number
  /** Fibers waiting for a permit right now. */
  readonly waiting: () => number
}

interface Waiter {
  granted: boolean
  queued: boolean
  resume: ((effect: Effect.Effect<void>) => void) | undefined
}

/** A simple double-ended queue (array + head index): `shift` without moving every element. */
class Queue<A> {
  private items: Array<A | undefined> = []
  private head = 0
  push(a: A): void {
    this.items.push(a)
  }
  shift(): A | undefined {
    if (this.head >= this.items.length) return undefined
    const a = this.items[this.head]
    this.items[this.head++] = undefined
    // Compact once the consumed prefix is at least half the array.
    if (this.head > 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return a
  }
}

export const unsafeMake = (permits: number): FifoSemaphore => {
  if (!Number.isInteger(permits) || permits < 1) throw new RangeError(`a semaphore needs at least one permit, got ${permits}`)
  let free = permits
  const queue = new Queue<Waiter>()
  let queued = 0

  const release = (): void => {
    // Waiters that gave up stay in the queue marked as such and are skipped here.
    let next = queue.shift()
    while (next !== undefined && !next.queued) next = queue.shift()
    if (next === undefined) {
      free++
      return
    }
    queued--
    next.queued = false
    next.granted = true
    next.resume?.(Effect.void)
  }

  const wait = (waiter: Waiter): Effect.Effect<void> =>
    Effect.async<void>((resume) => {
      if (free > 0) {
        free--
        waiter.granted = true
        resume(Effect.void)
        return
      }
      waiter.resume = resume
      waiter.queued = true
      queue.push(waiter)
      queued++
    })

  // The wait is the only interruptible part. However it ends interrupted — before its turn, or
  // just as a permit was handed to it — the handler (run uninterruptibly) puts things right:
  // a permit handed over goes back, a place in the queue is given up.
  const giveUp = (waiter: Waiter) =>
    Effect.sync(() => {
      if (waiter.granted) release()
      else if (waiter.queued) {
        waiter.queued = false
        queued--
      }
    })

  return {
    withPermit: (effect) =>
      Effect.uninterruptibleMask((restore) => {
        const waiter: Waiter = { granted: false, queued: false, resume: undefined }
        return Effect.zipRight(
          Effect.onInterrupt(restore(wait(waiter)), () => giveUp(waiter)),
          Effect.ensuring(restore(effect), Effect.sync(release))
        )
      }),
    free: () => free,
    waiting: () => queued
  }
}

export const make = (permits: number): Effect.Effect<FifoSemaphore> => Effect.sync(() => unsafeMake(permits))
