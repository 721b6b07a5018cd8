/**
 * The conformance suite every Backend runs: offers fit the requirements and come cheapest
 * first, excluded offers carry reasons, an instance can be created for an offer (and a
 * multi-node job's instances together, where the backend can; its data completed once its
 * runner is up, where the backend answers before), termination is idempotent, and an offer of
 * another backend is refused.
 */
import { expect, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import type { Requirements } from "../domain/Job.ts"
import * as Backend from "../ports/Backend.ts"

export interface BackendSuiteOptions {
  /** Requirements that at least one available offer of the backend meets. */
  readonly requirements: Requirements
  /** Whether the suite may create (and then terminate) a real instance (default true). */
  readonly provision?: boolean
}

const config: Backend.InstanceConfiguration = {
  projectName: "main",
  instanceName: "conformance-0",
  instanceId: "00000000-0000-4000-8000-000000000000",
  sshKeys: []
}

/**
 * Registers the Backend conformance tests for one implementation.
 *
 * @example
 * testBackend("memory", Backend.layerMemory({ type: "memory", offers }), { requirements })
 */
export const testBackend = <E>(
  name: string,
  backendLayer: Layer.Layer<Backend.Backend, E>,
  options: BackendSuiteOptions
): void => {
  layer(backendLayer)(`Backend conformance: ${name}`, (it) => {
    it.effect("offers fit the requirements, belong to the backend, and come cheapest first", () =>
      Effect.gen(function*() {
        const backend = yield* Backend.Backend
        const { offers, excluded } = yield* backend.getOffers(options.requirements)
        expect(offers.length).toBeGreaterThan(0)
        for (const offer of offers) {
          expect(offer.backend).toBe(backend.type)
          expect(Backend.offerMisfits(offer, options.requirements)).toEqual([])
        }
        const prices = offers.map((o) => o.price)
        expect(prices).toEqual([...prices].sort((a, b) => a - b))
        for (const e of excluded) expect(e.reasons.length).toBeGreaterThan(0)
      }))

    if (options.provision !== false) {
      it.effect("creates an instance for an available offer and terminates it idempotently", () =>
        Effect.gen(function*() {
          const backend = yield* Backend.Backend
          const { offers } = yield* backend.getOffers(options.requirements)
          const offer = offers.find((o) => o.availability === "available")
          expect(offer, "an available offer").toBeDefined()
          const data = yield* backend.createInstance(offer!, config)
          expect(data.backend).toBe(backend.type)
          expect(data.instanceType.name).toBe(offer!.instance.name)
          expect(data.region).toBe(offer!.region)
          expect(data.instanceId).not.toBe("")
          yield* backend.terminateInstance(data.instanceId, data.region, data.backendData)
          yield* backend.terminateInstance(data.instanceId, data.region, data.backendData)
        }))
    }

    if (options.provision !== false) {
      it.effect("completes an instance's provisioning data once its runner is up, where the backend does (updateProvisioningData)", () =>
        Effect.gen(function*() {
          const backend = yield* Backend.Backend
          if (backend.updateProvisioningData === undefined) return
          const { offers } = yield* backend.getOffers(options.requirements)
          const offer = offers.find((o) => o.availability === "available")
          expect(offer, "an available offer").toBeDefined()
          const data = yield* backend.createInstance(offer!, config)
          yield* Effect.gen(function*() {
            let completed = yield* backend.updateProvisioningData!(data)
            for (let i = 0; i < 60 && completed === undefined; i++) {
              // Real time (it.effect's clock is a test clock): the backend's runner starts on it.
              yield* Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 200)))
              completed = yield* backend.updateProvisioningData!(data)
            }
            expect(completed, "the runner up within the suite's wait").toBeDefined()
            expect([completed!.backend, completed!.instanceId, completed!.region]).toEqual([data.backend, data.instanceId, data.region])
            // Complete data is answered as it is.
            const again = yield* backend.updateProvisioningData!(completed!)
            expect(again?.runnerPort).toBe(completed!.runnerPort)
          }).pipe(Effect.ensuring(backend.terminateInstance(data.instanceId, data.region, data.backendData).pipe(Effect.orDie)))
        }))
    }

    if (options.provision !== false) {
      it.effect("creates a multi-node job's instances together, one per rank, when it can (createInstanceGroup)", () =>
        Effect.gen(function*() {
          const backend = yield* Backend.Backend
          if (backend.createInstanceGroup === undefined) return
          const { offers } = yield* backend.getOffers(options.requirements)
          const offer = offers.find((o) => o.availability === "available")
          expect(offer, "an available offer").toBeDefined()
          const job: Backend.InstanceJob = { jobName: "conformance-0-0", requirements: options.requirements, nodes: 2 }
          const configs = [0, 1].map((rank) => ({ ...config, instanceName: `conformance-${rank}`, instanceId: `00000000-0000-4000-8000-00000000000${rank}`, job }))
          const group = yield* backend.createInstanceGroup(offer!, configs)
          expect(group.length).toBe(2)
          for (const data of group) {
            expect(data.backend).toBe(backend.type)
            expect(data.region).toBe(offer!.region)
          }
          expect(new Set(group.map((d) => d.instanceId)).size).toBe(2)
          // Ranks in order, terminated idempotently (the master's may end the whole group).
          for (const data of [...group].reverse()) {
            yield* backend.terminateInstance(data.instanceId, data.region, data.backendData)
            yield* backend.terminateInstance(data.instanceId, data.region, data.backendData)
          }
          const foreign = Object.assign(Object.create(Object.getPrototypeOf(offer!)), offer!, { backend: `${backend.type}-other` })
          const error = yield* Effect.flip(backend.createInstanceGroup(foreign, configs))
          expect(error.reason).toBe("Invalid")
        }))
    }

    it.effect("terminating an instance that never existed succeeds", () =>
      Effect.gen(function*() {
        const backend = yield* Backend.Backend
        yield* backend.terminateInstance("conformance-no-such-instance", "nowhere")
      }))

    it.effect("refuses an offer of another backend with Invalid", () =>
      Effect.gen(function*() {
        const backend = yield* Backend.Backend
        const { offers } = yield* backend.getOffers(options.requirements)
        const foreign = Object.assign(Object.create(Object.getPrototypeOf(offers[0])), offers[0], {
          backend: `${backend.type}-other`
        })
        const error = yield* Effect.flip(backend.createInstance(foreign, config))
        expect(error.reason).toBe("Invalid")
        expect(error.message).toContain(`${backend.type}-other`)
      }))
  })
}
