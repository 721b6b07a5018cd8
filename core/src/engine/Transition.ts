/**
 * The result of a pure lifecycle step: the entity after the event and the effects a driver must
 * carry out, or the entity unchanged with the reason the event meant nothing in its status.
 */

/** An event that changed the entity (or was acted upon) and the effects it asks for. */
export interface Applied<E, F> {
  readonly _tag: "Applied"
  readonly ignored: false
  readonly entity: E
  readonly effects: ReadonlyArray<F>
}

/** An event that means nothing in the entity's status: the entity comes back untouched. */
export interface Ignored<E> {
  readonly _tag: "Ignored"
  readonly ignored: true
  readonly entity: E
  readonly effects: readonly []
  /** Why, in plain words (for logs and tests). */
  readonly reason: string
}

export type Transition<E, F> = Applied<E, F> | Ignored<E>

export const appliedTransition = <E, F>(entity: E, effects: ReadonlyArray<F> = []): Transition<E, F> => ({
  _tag: "Applied",
  ignored: false,
  entity,
  effects
})

export const ignoredTransition = <E, F = never>(entity: E, reason: string): Transition<E, F> => ({
  _tag: "Ignored",
  ignored: true,
  entity,
  effects: [],
  reason
})
