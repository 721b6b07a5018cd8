// The runner pool's instance rows (PoolInstances) over a real state store (embedded, in
// memory) and real hub connections: a joined machine is an idle instance at once, flagged
// unreachable while away and cleared when back, terminated with why when gone; a restarted
// server keeps the row the rejoining machine names; the backend tells the planner which idle
// pool instances this server cannot reach (unreachableHere).
import { describe, expect, it } from "@effect/vitest"
import { Instance, Requirements, StateStore } from "@dstack-ts/core"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { Effect, Schema } from "effect"
import * as Agent from "../../plugins/backend-pool/src/Agent.ts"
import * as Hub from "../../plugins/backend-pool/src/Hub.ts"
import * as PoolBackend from "../../plugins/backend-pool/src/PoolBackend.ts"
import * as PoolInstances from "../../plugins/backend-pool/src/PoolInstances.ts"
import { dial, hello, hubListener } from "../../plugins/backend-pool/test/support.ts"

const decode = Schema.decodeUnknownSync(Instance)

const until = <A, R>(what: string, read: Effect.Effect<A, unknown, R>, check: (a: A) => boolean, timeoutMs = 10_000) =>
  Effect.gen(function*() {
    const start = Date.now()
    while (true) {
      const a = yield* read
      if (check(a)) return a
      if (Date.now() - start > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms: ${JSON.stringify(a)}`)
      yield* Effect.sleep("20 millis")
    }
  })

const rowsOf = (key: string) =>
  Effect.flatMap(StateStore.StateStore, (store) =>
    Effect.map(store.instances.list({ projects: ["alpha"] }), (rows) => rows.map((r) => decode(r.doc)).filter((i) => i.hostname === key)))

describe("runner pool: machines as instance rows", () => {
  it.scopedLive("a machine is an idle instance from its join, unreachable while away, back when it rejoins, terminated with why when gone", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.StateStore
      const hub = Hub.make({ rejoinGraceMs: 1_000 })
      hub.recordIn((h) => PoolInstances.make(h, store))
      const port = { current: yield* hubListener(hub, "alpha") }
      const sockets: Array<import("node:net").Socket> = []
      const staying = yield* Effect.promise(() =>
        Agent.stayJoined({
          server: "http://unused", project: "alpha", token: "unused", hello: hello("box"), backoff: { initialMs: 40, maxMs: 100 },
          connect: () => Effect.runPromise(dial(port.current)).then(({ socket, channel }) => (sockets.push(socket), channel))
        }))
      const [row] = yield* until("the row", rowsOf("box.alpha.pool"), (rows) => rows.length === 1)
      expect(row).toMatchObject({ backend: "pool", name: "box", status: "idle", unreachable: false, runnerPort: 10999, idleDuration: null })
      expect(row!.instanceType.resources.cpus).toBe(2)
      expect(hub.machine("box.alpha.pool")!.takenBy, "the machine is its row's").toBe(row!.id)
      const backend = PoolBackend.make(hub, "alpha")
      expect(backend.unreachableHere!(row!)).toBeUndefined()
      expect((yield* backend.getOffers(Schema.decodeUnknownSync(Requirements)({ resources: { cpu: "1.." } }))).offers, "no offers: jobs go to the row").toEqual([])

      // Away (cut, rejoin held back), then back: flagged and cleared, one row throughout.
      const actual = port.current
      port.current = 1 // refused while away
      sockets[0]!.destroy()
      yield* until("flagged", rowsOf("box.alpha.pool"), (rows) => rows[0]?.unreachable === true)
      expect(backend.unreachableHere!(row!)).toBe("pool machine box is away (its connection dropped; it may rejoin)")
      port.current = actual
      yield* until("cleared", rowsOf("box.alpha.pool"), (rows) => rows.length === 1 && rows[0]!.unreachable === false)

      staying.leave("maintenance")
      const [gone] = yield* until("terminated", rowsOf("box.alpha.pool"), (rows) => rows[0]?.status === "terminated")
      expect(gone).toMatchObject({ id: row!.id, terminationReasonMessage: "pool machine box left the pool: maintenance" })
      expect(backend.unreachableHere!(row!)).toBe("pool machine box.alpha.pool is not joined to this server replica (its connection is held by another, or by none)")
      expect(yield* Effect.promise(() => staying.ended)).toEqual({ message: "left the pool", final: true })
    }).pipe(Effect.provide(EmbeddedStateStore.layerMemory())))

  it.scopedLive("a restarted server keeps the row the rejoining machine names; a new process gets a new row and the old one is terminated", () =>
    Effect.gen(function*() {
      const store = yield* StateStore.StateStore
      const first = Hub.make()
      first.recordIn((h) => PoolInstances.make(h, store))
      const a = yield* dial(yield* hubListener(first, "alpha"))
      const state: Agent.MachineState = {}
      yield* Effect.promise(() => Agent.serveMachine(a.channel, hello("box", { session: "s-1" }), state))
      const [row] = yield* until("the row", rowsOf("box.alpha.pool"), (rows) => rows.length === 1)
      yield* until("the machine was told its instance", Effect.sync(() => state.instanceId), (id) => id === row!.id)

      const second = Hub.make()
      second.recordIn((h) => PoolInstances.make(h, store))
      const port = yield* hubListener(second, "alpha")
      const b = yield* dial(port)
      yield* Effect.promise(() => Agent.serveMachine(b.channel, hello("box", { session: "s-1" }), state))
      yield* until("the same row kept", rowsOf("box.alpha.pool"), (rows) => second.machine("box.alpha.pool")?.takenBy === row!.id && rows.length === 1)
      b.socket.destroy()

      const c = yield* dial(port)
      yield* Effect.promise(() => Agent.serveMachine(c.channel, hello("box", { session: "s-2" }), {}))
      const rows = yield* until("a new row, the old one terminated", rowsOf("box.alpha.pool"), (rs) => rs.length === 2 && rs.some((r) => r.status === "terminated"))
      const old = rows.find((r) => r.id === row!.id)!
      expect(old.status).toBe("terminated")
      expect(old.terminationReasonMessage).toBe("pool machine box joined again as a new process (pool machine box lost its connection to the server): the runner this job ran on is gone")
      expect(rows.find((r) => r.id !== row!.id)!.status).toBe("idle")
      a.socket.destroy()
      c.socket.destroy()
    }).pipe(Effect.provide(EmbeddedStateStore.layerMemory())))
})
