// Effect combinators for the request path that apply their function at once when the Effect
// they are given is already resolved (an `Exit`: `Effect.succeed`/`Effect.fail` are Exits),
// and otherwise chain exactly as `Effect.flatMap` and friends do. A request whose every step is
// answered from memory (its caller, their role, the run) is then a resolved Effect when its
// handler returns, and the router answers it without starting a fiber; the same handler code
// runs a fiber as soon as any step has to wait. One path, two speeds.
import { Effect, Exit } from "effect"

/** `Effect.flatMap`, applied now when `self` is resolved. */
export const flatMap = <A, E, R, B, E2, R2>(
  self: Effect.Effect<A, E, R>,
  f: (a: A) => Effect.Effect<B, E2, R2>
): Effect.Effect<B, E | E2, R | R2> => {
  if (Exit.isExit(self)) {
    const exit = self as unknown as Exit.Exit<A, E>
    return Exit.isSuccess(exit) ? f(exit.value) : (exit as Exit.Exit<never, E>)
  }
  return Effect.flatMap(self, f)
}

/** `Effect.map`, applied now when `self` is resolved. */
export const map = <A, E, R, B>(self: Effect.Effect<A, E, R>, f: (a: A) => B): Effect.Effect<B, E, R> => {
  if (Exit.isExit(self)) {
    const exit = self as unknown as Exit.Exit<A, E>
    return Exit.isSuccess(exit) ? Exit.succeed(f(exit.value)) : (exit as Exit.Exit<never, E>)
  }
  return Effect.map(self, f)
}

/** `Effect.mapError`, applied now when `self` is resolved (a failure stays resolved). */
export const mapError = <A, E, R, E2>(self: Effect.Effect<A, E, R>, f: (e: E) => E2): Effect.Effect<A, E2, R> => {
  if (Exit.isExit(self)) return Exit.mapError(self as unknown as Exit.Exit<A, E>, f)
  return Effect.mapError(self, f)
}
