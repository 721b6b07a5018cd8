/**
 * The `pool` backend: the machines joined to a project (`dstack runner join`) as offers, one
 * instance per machine at a time (its runner takes one job at a time). A machine that leaves,
 * loses its connection or stops heartbeating ends its instance's job as `instance_unreachable`
 * with why (`instanceEnd`).
 */
import {
  Backend,
  InstanceDisk,
  InstanceGpu,
  InstanceOffer,
  InstanceResources,
  InstanceType,
  JobProvisioningData
} from "@dstack-ts/core"
import { Effect } from "effect"
import type { Hub, Machine } from "./Hub.ts"

export const TYPE = "pool"
const MODULE = "PoolBackend"

const offerOf = (m: Machine): InstanceOffer => {
  const r = m.hello.resources
  return new InstanceOffer({
    backend: TYPE,
    region: m.project,
    price: 0,
    availability: m.takenBy === undefined ? "available" : "busy",
    instance: new InstanceType({
      name: m.name,
      resources: new InstanceResources({
        cpus: r.cpus,
        memoryMib: r.memoryMib,
        gpus: r.gpus.map((g) => new InstanceGpu({ name: g.name, memoryMib: g.memoryMib, vendor: "nvidia" })),
        spot: false,
        disk: new InstanceDisk({ sizeMib: r.diskMib }),
        ...(r.cpuArch !== undefined ? { cpuArch: r.cpuArch } : {}),
        description: `pool machine ${m.name} (${r.hostname})`
      })
    })
  })
}

/**
 * The backend of one project's pool; without a project (a configuration check) it offers
 * nothing.
 */
export const make = (hub: Hub, project: string | undefined): Backend.Backend =>
  Backend.make({
    type: TYPE,
    catalog: () => Effect.sync(() => (project === undefined ? [] : hub.machines(project).map(offerOf))),
    createInstance: (offer, config) =>
      Effect.suspend(() => {
        const machine = hub.machines(config.projectName).find((m) => m.name === offer.instance.name)
        if (machine === undefined) {
          return Backend.fail(MODULE, "createInstance", "NoCapacity", `pool machine ${offer.instance.name} is not joined to project ${config.projectName} now`)
        }
        if (machine.takenBy !== undefined && machine.takenBy !== config.instanceId) {
          return Backend.fail(MODULE, "createInstance", "NoCapacity", `pool machine ${machine.name} is busy with instance ${machine.takenBy}`)
        }
        machine.takenBy = config.instanceId
        return Effect.succeed(new JobProvisioningData({
          backend: TYPE,
          instanceType: offerOf(machine).instance,
          instanceId: config.instanceId,
          hostname: machine.key,
          region: machine.project,
          price: 0,
          username: "root",
          dockerized: false,
          runnerPort: machine.hello.runnerPort,
          backendData: JSON.stringify({ machine: machine.key, joined_at: machine.joinedAt.toISOString() })
        }))
      }),
    terminateInstance: (instanceId) =>
      Effect.sync(() => {
        for (const m of project === undefined ? [] : hub.machines(project)) if (m.takenBy === instanceId) m.takenBy = undefined
      }),
    instanceEnd: (pd) =>
      Effect.sync(() => {
        const machine = pd.hostname === null ? undefined : hub.machine(pd.hostname)
        if (machine !== undefined && machine.takenBy === pd.instanceId) return undefined
        const gone = pd.hostname === null ? undefined : hub.departure(pd.hostname)
        const message = gone !== undefined
          ? gone.message
          : machine !== undefined
            ? `pool machine ${machine.name} rejoined the pool: the runner this job ran on is gone`
            : `pool machine ${pd.hostname} is not joined to this server`
        return { reason: "instance_unreachable" as const, message }
      })
  })
