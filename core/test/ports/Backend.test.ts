// The Backend port: offer filtering with reasons, the derived behaviour of `make`, and the
// memory backend running the conformance suite.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Requirements } from "../../src/domain/Job.ts"
import { InstanceOffer } from "../../src/domain/Offer.ts"
import * as Backend from "../../src/ports/Backend.ts"
import { testBackend } from "../../src/testing/index.ts"

const offer = (
  name: string,
  price: number,
  cpus: number,
  memoryGb: number,
  extra: Record<string, unknown> = {},
  spot = false
) =>
  Schema.decodeUnknownSync(InstanceOffer)({
    backend: "memory",
    region: "local",
    price,
    instance: {
      name,
      resources: { cpus, memory_mib: memoryGb * 1024, gpus: [], spot, disk: { size_mib: 200 * 1024 } }
    },
    ...extra
  })

const requirements = (input: Record<string, unknown> = {}) =>
  Schema.decodeUnknownSync(Requirements)({ resources: {}, ...input })

const offers = [
  offer("big", 2.0, 16, 64),
  offer("small", 0.1, 1, 2),
  offer("medium", 0.5, 4, 16),
  offer("spot-medium", 0.2, 4, 16, {}, true),
  offer("gone", 0.3, 8, 32, { availability: "not_available" })
]

testBackend("Backend.layerMemory", Backend.layerMemory({ offers }), { requirements: requirements() })
testBackend("Backend.layerMemory (group)", Backend.layerMemory({ offers, group: true }), { requirements: requirements() })

describe("Backend offers", () => {
  it("filters by resources, spot policy and price, cheapest first, with reasons", () => {
    const result = Backend.filterOffers(offers, requirements({ spot: false, max_price: 1.0 }))
    expect(result.offers.map((o) => o.instance.name)).toEqual(["gone", "medium"])
    const why = Object.fromEntries(result.excluded.map((e) => [e.offer.instance.name, e.reasons]))
    expect(why.small.join("; ")).toContain("cpu: needs")
    expect(why.small.join("; ")).toContain("memory: needs")
    expect(why["spot-medium"]).toEqual(["spot: needs an on-demand instance, offer is spot"])
    expect(why.big).toEqual(["price: 2/h is above max_price 1/h"])
  })

  it("spot: true keeps only spot offers; null keeps both", () => {
    expect(Backend.filterOffers(offers, requirements({ spot: true })).offers.map((o) => o.instance.name)).toEqual([
      "spot-medium"
    ])
    expect(Backend.filterOffers(offers, requirements()).offers.map((o) => o.instance.name)).toEqual([
      "spot-medium",
      "gone",
      "medium",
      "big"
    ])
  })
})

describe("Backend memory", () => {
  it.effect("tracks running instances; NoCapacity for an offer that is not available", () =>
    Effect.gen(function*() {
      const backend = yield* Backend.makeMemory({ offers })
      const config = { projectName: "p", instanceName: "i", instanceId: "1", sshKeys: [] }
      const data = yield* backend.createInstance(offers[2], config)
      expect(yield* backend.running).toEqual([data.instanceId])
      const error = yield* Effect.flip(backend.createInstance(offers[4], config))
      expect([error.reason, error.isRetryable, error.message]).toEqual(["NoCapacity", true, "gone in local is not_available"])
      yield* backend.terminateInstance(data.instanceId, "local")
      expect(yield* backend.running).toEqual([])
    }))

  it.effect("make passes errors other than NotFound from terminate through", () =>
    Effect.gen(function*() {
      const backend = Backend.make({
        type: "flaky",
        catalog: () => Effect.succeed([]),
        createInstance: () => Backend.fail("flaky", "createInstance", "Unknown", "unused"),
        terminateInstance: () => Backend.fail("flaky", "terminateInstance", "Transport", "API unreachable")
      })
      const error = yield* Effect.flip(backend.terminateInstance("x", "r"))
      expect([error.reason, error.isRetryable]).toEqual(["Transport", true])
    }))
})
