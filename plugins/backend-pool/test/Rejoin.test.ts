// A machine that rejoins by itself (Agent.stayJoined) over real TCP connections to the hub: a
// cut connection is joined again as the same machine, which keeps its instance (its job's
// follower finds it again); a restarted server (a new hub) learns from the hello which instance
// holds the machine; a new process of the machine, a removal and a final refusal end things
// with why. Also the backoff's delays.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import type * as net from "node:net"
import * as Agent from "../src/Agent.ts"
import * as Hub from "../src/Hub.ts"
import * as PoolBackend from "../src/PoolBackend.ts"
import { config, dial, hello, hubListener, requirements, until } from "./support.ts"


/**
 * A machine that stays joined to the hub listening on `port.current` (a test moves it to mimic
 * a restarted server); `sockets` are its connections, to cut.
 */
const stay = (port: { current: number }, h: ReturnType<typeof hello>, connect?: () => Promise<Hub.Channel>) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const sockets: Array<net.Socket> = []
      const events: Array<Agent.JoinEvent> = []
      const staying = await Agent.stayJoined({
        server: "http://unused",
        project: "alpha",
        token: "unused",
        hello: h,
        backoff: { initialMs: 40, maxMs: 200 },
        onEvent: (e) => events.push(e),
        connect: connect ?? (() => Effect.runPromise(dial(port.current)).then(({ socket, channel }) => (sockets.push(socket), channel)))
      })
      return { staying, sockets, events }
    }),
    ({ staying }) => Effect.sync(() => staying.leave("test over"))
  )

describe("runner pool: rejoining", () => {
  it("backoff doubles from 1 s to a 30 s cap, less a random half", () => {
    expect([1, 2, 3, 5, 6, 50].map((a) => Agent.backoffDelay(a, {}, () => 1))).toEqual([1_000, 2_000, 4_000, 16_000, 30_000, 30_000])
    expect([1, 2, 6].map((a) => Agent.backoffDelay(a, {}, () => 0))).toEqual([500, 1_000, 15_000])
    expect(Agent.backoffDelay(3, { initialMs: 100, maxMs: 300 }, () => 0.5)).toBe(225)
  })

  it.scopedLive("a cut connection is joined again as the same machine, which keeps its instance; its job's end is not reported meanwhile", () =>
    Effect.gen(function*() {
      const hub = Hub.make({ rejoinGraceMs: 10_000 })
      const port = { current: yield* hubListener(hub, "alpha") }
      const { staying, sockets, events } = yield* stay(port, hello("box"))
      const backend = PoolBackend.make(hub, "alpha")
      const pd = yield* backend.createInstance((yield* backend.getOffers(requirements)).offers[0]!, config("alpha", "i-1"))

      sockets[0]!.destroy()
      yield* until("the machine is away", () => hub.machine("box.alpha.pool") === undefined)
      expect(yield* backend.instanceEnd!(pd), "away within its grace: the job is not ended").toBeUndefined()
      yield* until("the machine is back", () => hub.machine("box.alpha.pool") !== undefined)
      expect(sockets.length).toBe(2)
      expect(hub.machine("box.alpha.pool")!.takenBy, "one instance for the machine, kept").toBe("i-1")
      expect(yield* backend.instanceEnd!(pd)).toBeUndefined()
      const busy = yield* Effect.either(backend.createInstance((yield* backend.getOffers(requirements)).offers[0]!, config("alpha", "i-2")))
      expect(Either.isLeft(busy) && busy.left.message).toContain("busy with instance i-1")
      expect(events.map((e) => e._tag)).toEqual(["Lost", "Retrying", "Rejoined"])
      expect(events[2]).toMatchObject({ _tag: "Rejoined", machine: "box.alpha.pool", attempts: 1, kept: true })
      expect(staying.machine).toBe("box.alpha.pool")
    }))

  it.scopedLive("a restarted server learns from the rejoining machine which instance holds it; one that never returns fails its job after the grace", () =>
    Effect.gen(function*() {
      const first = Hub.make()
      const port = { current: yield* hubListener(first, "alpha") }
      const { sockets, events } = yield* stay(port, hello("box"))
      const pd = yield* PoolBackend.make(first, "alpha").createInstance(
        (yield* PoolBackend.make(first, "alpha").getOffers(requirements)).offers[0]!,
        config("alpha", "i-7")
      )
      yield* Effect.sleep("50 millis") // the Assign frame reaches the machine

      // The server restarts: a new hub, on another port; the old connection goes.
      const second = Hub.make({ rejoinGraceMs: 10_000 })
      const backend = PoolBackend.make(second, "alpha")
      expect(yield* backend.instanceEnd!(pd), "the new server waits for the machine").toBeUndefined()
      port.current = yield* hubListener(second, "alpha")
      sockets[0]!.destroy()
      yield* until("the machine joins the new server", () => second.machine("box.alpha.pool") !== undefined)
      expect(second.machine("box.alpha.pool")!.takenBy).toBe("i-7")
      expect(yield* backend.instanceEnd!(pd)).toBeUndefined()
      expect((yield* backend.getOffers(requirements)).offers.map((o) => o.availability)).toEqual(["busy"])
      // The machine says so once the server's welcome reaches it (after the server counts it joined).
      yield* until("the machine hears it rejoined", () => events.at(-1)?._tag === "Rejoined")
      expect(events.at(-1)).toMatchObject({ _tag: "Rejoined", kept: false })

      // A server whose grace is over and that never saw the machine: the job ends, saying so.
      const third = Hub.make({ rejoinGraceMs: 0 })
      expect(yield* PoolBackend.make(third, "alpha").instanceEnd!(pd)).toEqual({
        reason: "instance_unreachable",
        message: "pool machine box.alpha.pool did not rejoin this server within 0 s of its start"
      })
    }))

  it.scopedLive("a machine back as a new process (another session) is a new machine: the old instance's job ends, saying so", () =>
    Effect.gen(function*() {
      const hub = Hub.make({ rejoinGraceMs: 10_000 })
      const port = yield* hubListener(hub, "alpha")
      const backend = PoolBackend.make(hub, "alpha")
      const a = yield* dial(port)
      yield* Effect.promise(() => Agent.serveMachine(a.channel, hello("box", { session: "run-1" })))
      const pd = yield* backend.createInstance((yield* backend.getOffers(requirements)).offers[0]!, config("alpha", "i-1"))

      // While the first connection is still held, the same session takes its place; another is refused.
      const b = yield* dial(port)
      const again = yield* Effect.promise(() => Agent.serveMachine(b.channel, hello("box", { session: "run-1" })))
      expect(again.rejoined).toBe(true)
      yield* until("the older connection is closed", () => a.socket.destroyed || a.socket.readableEnded)
      const c = yield* dial(port)
      const twin = yield* Effect.promise(() => Agent.serveMachine(c.channel, hello("box", { session: "run-9" })).then(() => "joined", (e: Agent.JoinRefused) => `${e.final}: ${e.message}`))
      expect(twin).toBe("true: refused: a machine named box is already joined to project alpha (give another --name)")

      b.socket.destroy()
      yield* until("away", () => hub.machine("box.alpha.pool") === undefined)
      const d = yield* dial(port)
      const fresh = yield* Effect.promise(() => Agent.serveMachine(d.channel, hello("box", { session: "run-2" })))
      expect(fresh.rejoined).toBe(false)
      expect(hub.machine("box.alpha.pool")!.takenBy).toBeUndefined()
      expect(yield* backend.instanceEnd!(pd)).toEqual({
        reason: "instance_unreachable",
        message: "pool machine box joined again as a new process (pool machine box lost its connection to the server): the runner this job ran on is gone"
      })
      d.socket.destroy()
    }))

  it.scopedLive("a removed machine is told so and does not rejoin; its instance's job ends saying it was removed", () =>
    Effect.gen(function*() {
      const hub = Hub.make({ rejoinGraceMs: 10_000 })
      const port = { current: yield* hubListener(hub, "alpha") }
      const { staying, sockets, events } = yield* stay(port, hello("box"))
      const backend = PoolBackend.make(hub, "alpha")
      const pd = yield* backend.createInstance((yield* backend.getOffers(requirements)).offers[0]!, config("alpha", "i-1"))
      expect(hub.remove("box.alpha.pool", "by admin")).toBe(true)
      expect(yield* Effect.promise(() => staying.ended)).toEqual({
        message: "the server dropped this machine: pool machine box was removed from the pool: by admin",
        final: true
      })
      expect(sockets.length, "no rejoin").toBe(1)
      expect(events).toEqual([])
      expect(yield* backend.instanceEnd!(pd)).toEqual({ reason: "instance_unreachable", message: "pool machine box was removed from the pool: by admin" })
      expect(hub.remove("box.alpha.pool", "again"), "no such machine now").toBe(false)
    }))

  it.scopedLive("a final refusal while rejoining (the token no longer accepted) ends it; other failures are retried", () =>
    Effect.gen(function*() {
      const hub = Hub.make()
      const port = yield* hubListener(hub, "alpha")
      const sockets: Array<net.Socket> = []
      let calls = 0
      const connect = async (): Promise<Hub.Channel> => {
        calls++
        if (calls === 2) throw new Error("connect ECONNREFUSED 127.0.0.1:1")
        if (calls === 3) throw new Agent.JoinRefused("the server refused the join (HTTP 403): Invalid token", true)
        const { socket, channel } = await Effect.runPromise(dial(port))
        sockets.push(socket)
        return channel
      }
      const { staying, events } = yield* stay({ current: port }, hello("box"), connect)
      sockets[0]!.destroy()
      expect(yield* Effect.promise(() => staying.ended)).toEqual({ message: "the server refused the join (HTTP 403): Invalid token", final: true })
      expect(events.map((e) => e._tag)).toEqual(["Lost", "Retrying", "Retrying"])
      expect(events[2]).toMatchObject({ attempt: 2, error: "connect ECONNREFUSED 127.0.0.1:1" })
    }))
})
