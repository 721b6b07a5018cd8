// The StateStore port's own helpers: the lazily loaded memory layer, token hashing, retryable
// reasons and the documents-by-kind accessor.
import { expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { StateStore } from "../../src/ports/index.ts"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"

it.effect("hashes tokens as sha256 hex", () =>
  Effect.gen(function* () {
    expect(yield* StateStore.hashToken("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    const a = StateStore.generateToken()
    const b = StateStore.generateToken()
    expect(a).not.toBe(b)
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
  }))

it("marks only Conflict and Unavailable as retryable", () => {
  const reasons = StateStore.StateStoreErrorReason.literals
  const retryable = reasons.filter((reason) =>
    new StateStore.StateStoreError({ module: "m", method: "x", reason }).isRetryable
  )
  expect(retryable).toEqual(["Conflict", "Unavailable"])
})

it.effect("the embedded store in memory gives a working, empty port", () =>
  Effect.gen(function* () {
    const store = yield* StateStore.StateStore
    expect(yield* store.users.list()).toEqual([])
    const boot = yield* StateStore.bootstrap()
    expect(boot.createdAdmin).toBe(true)
    expect(boot.project.projectName).toBe("main")
    expect(StateStore.documents(store, "fleet")).toBe(store.fleets)
    expect(StateStore.documents(store, "job").kind).toBe("job")
  }).pipe(Effect.provide(EmbeddedStateStore.layerMemory())), 60_000)
