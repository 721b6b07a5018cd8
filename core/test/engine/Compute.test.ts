// Where the engine reaches a runner (Compute.target) on a fresh Compute, as a server that just
// restarted has one: the project's backend of the instance's type is made first, so a backend's
// own way to its runners (`runnerAccess`) is known without anything else having made it; a
// project that no longer has the backend is answered from the provisioning data; one whose
// backend cannot be made fails saying why. A real embedded store (in memory) and plugin host;
// the backend is a small one of this test's, which records how often it is made.
import { Context, Deferred, Effect, Exit, Fiber, Layer, Option, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { JobProvisioningData } from "../../src/domain/Job.ts"
import * as Compute from "../../src/engine/Compute.ts"
import { definePlugin } from "../../src/plugin/index.ts"
import * as PluginHost from "../../src/plugin/PluginHost.ts"
import * as Backend from "../../src/ports/Backend.ts"
import { StateStore, type StateStoreService } from "../../src/ports/StateStore.ts"
import { provisioningData } from "./fixtures.ts"

let store: StateStoreService
let scope: Scope.CloseableScope
const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect as Effect.Effect<A, never>)

/** How often the `gated` backend was made, by the login host of its configuration. */
const made: Array<string> = []
/** Until `slowGate` is done, making the `slow` backend does not finish (a login that hangs); `slowStarted` says it began. */
let slowGate: Deferred.Deferred<void>
let slowStarted: Deferred.Deferred<void>

const plugin = definePlugin({
  name: "@test/backend-gated",
  version: "1.0.0",
  core: ">=0.0.0",
  backends: {
    // Reaches its runners over SSH through the login host of its configuration, as Slurm does.
    gated: (config) =>
      Effect.suspend(() => {
        const login = (config as { login?: unknown }).login
        if (typeof login !== "string") return Backend.fail("gated", "make", "Invalid", "login: expected a host name")
        made.push(login)
        return Effect.succeed(Backend.make({
          type: "gated",
          catalog: () => Effect.succeed([]),
          createInstance: () => Backend.fail("gated", "createInstance", "NoCapacity", "none"),
          terminateInstance: () => Effect.void,
          runnerAccess: (pd) => (pd.backend === "gated" ? { user: "runner", privateKey: "KEY", proxyJump: { hostname: login, user: "login", privateKey: "KEY" } } : undefined)
        }))
      }),
    slow: () =>
      Effect.flatMap(Effect.zipRight(Deferred.succeed(slowStarted, undefined), Deferred.await(slowGate)), () =>
        Effect.succeed(Backend.make({
          type: "slow",
          catalog: () => Effect.succeed([]),
          createInstance: () => Backend.fail("slow", "createInstance", "NoCapacity", "none"),
          terminateInstance: () => Effect.void
        })))
  }
})

const pd = (extra: Partial<ConstructorParameters<typeof JobProvisioningData>[0]> = {}) =>
  new JobProvisioningData({ ...provisioningData(), backend: "gated", instanceId: "i-1", hostname: "node-1", ...extra })

/** A Compute of its own, with nothing made yet. */
const freshCompute = () =>
  run(Effect.gen(function* () {
    const host = yield* PluginHost.make([plugin])
    return yield* Compute.make().pipe(Effect.provideService(PluginHost.PluginHost, host), Effect.provideService(StateStore, store), Scope.extend(scope))
  }))

beforeAll(async () => {
  scope = await Effect.runPromise(Scope.make())
  const context = await Effect.runPromise(Layer.buildWithScope(EmbeddedStateStore.layerMemory(), scope))
  store = Context.get(context, StateStore)
  await run(store.users.create({ username: "admin", globalRole: "admin", tokenHash: "x" }))
  for (const name of ["a", "b", "none"]) await run(store.projects.create({ name, owner: "admin" }))
  await run(store.backends.upsert({ project: "a", type: "gated", config: { login: "login-a" } }))
  await run(store.backends.upsert({ project: "b", type: "gated", config: {} }))
  await run(store.backends.upsert({ project: "a", type: "slow", config: {} }))
}, 60_000)
afterAll(() => Effect.runPromise(Scope.close(scope, Exit.void)))

describe("Compute.target", () => {
  it("makes the project's backend first: its runner access is known on a Compute that made nothing before", async () => {
    const compute = await freshCompute()
    made.length = 0
    const target = await run(compute.target("a", pd()))
    expect(made).toEqual(["login-a"])
    expect(target).toMatchObject({ hostname: "node-1", ssh: { user: "runner", proxyJump: { hostname: "login-a" } } })
    // Made once, then kept.
    await run(compute.target("a", pd()))
    expect(made).toEqual(["login-a"])
  })

  it("a backend made already is answered while another one is still being made", async () => {
    const compute = await freshCompute()
    await run(compute.target("a", pd()))
    slowGate = await run(Deferred.make<void>())
    slowStarted = await run(Deferred.make<void>())
    const making = await run(Effect.forkDaemon(compute.backend("a", "slow")))
    await run(Deferred.await(slowStarted))
    const target = await run(compute.target("a", pd()))
    expect(target.ssh?.proxyJump?.hostname).toBe("login-a")
    expect(Option.isNone(await run(Fiber.poll(making)))).toBe(true)
    await run(Deferred.succeed(slowGate, undefined))
    expect((await run(Fiber.join(making))).type).toBe("slow")
  })

  it("a project without a backend of that type gets the target from the provisioning data alone", async () => {
    const compute = await freshCompute()
    const target = await run(compute.target("none", pd()))
    expect(target).toEqual({ hostname: "node-1", runnerPort: 10999, username: "root", instanceId: "i-1" })
  })

  it("a backend that cannot be made fails the target, naming the project, the backend and why", async () => {
    const compute = await freshCompute()
    const failed = await Effect.runPromise(Effect.flip(compute.target("b", pd())))
    expect(failed.reason).toBe("Transport")
    expect(failed.message).toMatch(/instance i-1 .*project b's backend gated: login: expected a host name/)
  })
})
