// The hub and the pool backend with the real agent over real TCP connections: a machine's
// hello is checked (name, duplicates, a first frame that is not a hello, a broken frame), a
// joined machine becomes an offer of its project only, one instance at a time, and a machine
// that leaves, loses its connection or stops heartbeating ends its instance's job with why.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as Agent from "../src/Agent.ts"
import * as Hub from "../src/Hub.ts"
import { encode, FrameType } from "../src/internal/Frames.ts"
import * as PoolBackend from "../src/PoolBackend.ts"
import { config, dial, hello, hubListener, joinMachine, requirements, until } from "./support.ts"
import plugin from "../src/index.ts"


describe("runner pool hub", () => {
  it.scoped("a joined machine is an offer of its project only, taken by one instance at a time, freed by termination", () =>
    Effect.gen(function*() {
      const hub = Hub.make()
      const port = yield* hubListener(hub, "alpha")
      const { joined } = yield* joinMachine(port, hello("box-1"))
      expect(joined.machine).toBe("box-1.alpha.pool")
      const alpha = PoolBackend.make(hub, "alpha")
      const beta = PoolBackend.make(hub, "beta")
      const { offers } = yield* alpha.getOffers(requirements)
      expect(offers.map((o) => [o.backend, o.instance.name, o.instance.resources.cpus, o.instance.resources.memoryMib, o.availability]))
        .toEqual([["pool", "box-1", 2, 4096, "available"]])
      expect((yield* beta.getOffers(requirements)).offers).toEqual([])
      expect((yield* PoolBackend.make(hub, undefined).getOffers(requirements)).offers, "no project: no offers").toEqual([])

      const pd = yield* alpha.createInstance(offers[0]!, config("alpha", "i-1"))
      expect([pd.backend, pd.hostname, pd.runnerPort, pd.instanceId]).toEqual(["pool", "box-1.alpha.pool", 10999, "i-1"])
      const busy = yield* Effect.either(alpha.createInstance(offers[0]!, config("alpha", "i-2")))
      expect(Either.isLeft(busy) && busy.left.reason).toBe("NoCapacity")
      expect(Either.isLeft(busy) && busy.left.message).toContain("busy with instance i-1")
      const other = yield* Effect.either(beta.createInstance(offers[0]!, config("beta", "i-3")))
      expect(Either.isLeft(other) && other.left.message).toContain("not joined to project beta")
      expect(yield* alpha.instanceEnd!(pd), "a machine still joined has not ended").toBeUndefined()
      yield* alpha.terminateInstance("i-1", "alpha")
      expect((yield* alpha.getOffers(requirements)).offers[0]!.availability).toBe("available")
    }))

  it.scoped("a machine that leaves ends its instance's job as instance_unreachable, saying it left", () =>
    Effect.gen(function*() {
      const hub = Hub.make()
      const port = yield* hubListener(hub, "alpha")
      const { joined } = yield* joinMachine(port, hello("box-2"))
      const backend = PoolBackend.make(hub, "alpha")
      const pd = yield* backend.createInstance((yield* backend.getOffers(requirements)).offers[0]!, config("alpha", "i-1"))
      joined.leave("maintenance")
      expect(yield* Effect.promise(() => joined.closed)).toEqual({ message: "left the pool", final: true })
      yield* until("the hub sees the machine gone", () => hub.machine("box-2.alpha.pool") === undefined)
      expect(yield* backend.instanceEnd!(pd)).toEqual({ reason: "instance_unreachable", message: "pool machine box-2 left the pool: maintenance" })
      expect((yield* backend.getOffers(requirements)).offers).toEqual([])
    }))

  it.scoped("a machine whose connection is cut, and one that stops heartbeating, are away, then gone with why when they do not rejoin", () =>
    Effect.gen(function*() {
      const hub = Hub.make({ rejoinGraceMs: 1_000 })
      const port = yield* hubListener(hub, "alpha")
      const { socket } = yield* joinMachine(port, hello("cut"))
      socket.destroy()
      yield* until("the cut machine is away", () => hub.machine("cut.alpha.pool") === undefined)
      expect(hub.known("cut.alpha.pool")?.awaySince, "away: it may still rejoin").toBeTypeOf("number")
      expect(hub.departure("cut.alpha.pool")).toBeUndefined()
      expect(hub.machines("alpha"), "an away machine is no offer").toEqual([])
      yield* until("the cut machine is gone", () => hub.departure("cut.alpha.pool") !== undefined)
      expect(hub.departure("cut.alpha.pool")!.message).toBe("pool machine cut lost its connection to the server, and did not rejoin within 1 s")

      // A machine that says hello and then nothing: three heartbeats of one second missed.
      const silent = yield* dial(port)
      silent.channel.write(encode(FrameType.Hello, 0, JSON.stringify(hello("quiet"))))
      yield* until("the quiet machine joins", () => hub.machine("quiet.alpha.pool") !== undefined)
      yield* until("the quiet machine is dropped", () => hub.departure("quiet.alpha.pool") !== undefined, 10_000)
      expect(hub.departure("quiet.alpha.pool")!.message).toMatch(/^pool machine quiet stopped heartbeating \(nothing heard for \d+ s, heartbeat every 1 s\), and did not rejoin within 1 s$/)
      silent.socket.destroy()
    }))

  it.scoped("hellos are checked: a bad name, a name already joined, a first frame that is not a hello, a broken frame", () =>
    Effect.gen(function*() {
      const hub = Hub.make()
      const port = yield* hubListener(hub, "alpha")
      const refused = (h: ReturnType<typeof hello>) =>
        Effect.flatMap(dial(port), ({ channel }) => Effect.promise(() => Agent.serveMachine(channel, h).then(() => "joined", (e: Error) => `${e.name}: ${e.message}`)))
      expect(yield* refused(hello("Bad Name"))).toContain('refused: name "Bad Name" is not a machine name')
      expect(yield* refused(hello("ok", { runnerPort: 0 }))).toContain("refused: runnerPort 0 is not a port")
      yield* joinMachine(port, hello("twin"))
      expect(yield* refused(hello("twin"))).toBe("JoinRefused: refused: a machine named twin is already joined to project alpha (give another --name)")
      expect(hub.machine("twin.alpha.pool"), "the first twin stays").toBeDefined()

      const raw = (bytes: Uint8Array) =>
        Effect.flatMap(dial(port), ({ channel, socket }) =>
          Effect.async<string>((resume) => {
            const chunks: Array<Buffer> = []
            socket.on("data", (c: Buffer) => chunks.push(c))
            socket.on("close", () => resume(Effect.succeed(Buffer.concat(chunks).subarray(9).toString("utf8"))))
            channel.write(bytes)
          }))
      expect(yield* raw(encode(FrameType.Ping, 0))).toBe("the first frame must be a hello, got type 3")
      const huge = Buffer.alloc(9)
      huge.writeUInt32BE(0xffffffff, 0)
      expect(yield* raw(huge)).toBe(`a frame of ${0xffffffff} bytes (expected 5 to ${8 * 1024 * 1024})`)
    }))

  it.effect("the plugin refuses settings for the pool backend, naming them", () =>
    Effect.gen(function*() {
      const made = yield* Effect.either(Effect.scoped(plugin.backends!.pool!({ max_instances: 2 })))
      expect(Either.isLeft(made) && made.left.message).toBe("the pool backend takes no settings (machines join with `dstack runner join`); remove max_instances")
    }))
})
