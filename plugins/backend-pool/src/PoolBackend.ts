/**
 * The `pool` backend: the machines joined to a project (`dstack runner join`) as offers, one
 * instance per machine at a time (its runner takes one job at a time). A machine that leaves,
 * loses its connection or stops heartbeating ends its instance's job as `instance_unreachable`
 * with why (`instanceEnd`).
 */
import { Backend, InstanceOffer, JobProvisioningData } from "@dstack-ts/core"
import { Effect } from "effect"
import type { Hub, Machine } from "./Hub.ts"
import { instanceTypeOf } from "./PoolInstances.ts"

export const TYPE = "pool"
const MODULE = "PoolBackend"

const offerOf = (m: Machine): InstanceOffer => {
  return new InstanceOffer({
    backend: TYPE,
    region: m.project,
    price: 0,
    availability: m.takenBy === undefined ? "available" : "busy",
    instance: instanceTypeOf(m)
  })
}

/** The machine key in an instance's backend data (written by `createInstance`). */
const machineOf = (backendData: string | undefined | null): string | undefined => {
  try {
    const m = (JSON.parse(backendData ?? "") as { machine?: unknown }).machine
    return typeof m === "string" ? m : undefined
  } catch {
    return undefined
  }
}

/**
 * The backend of one project's pool; without a project (a configuration check) it offers
 * nothing.
 */
export const make = (hub: Hub, project: string | undefined): Backend.Backend =>
  Backend.make({
    type: TYPE,
    // In a server, each joined machine is an idle instance row (PoolInstances) and jobs go
    // there: offers would make a second instance for the same machine.
    catalog: () => Effect.sync(() => (project === undefined || hub.recording() ? [] : hub.machines(project).map(offerOf))),
    createInstance: (offer, config) =>
      Effect.suspend(() => {
        const machine = hub.machines(config.projectName).find((m) => m.name === offer.instance.name)
        if (machine === undefined) {
          return Backend.fail(MODULE, "createInstance", "NoCapacity", `pool machine ${offer.instance.name} is not joined to project ${config.projectName} now`)
        }
        if (machine.takenBy !== undefined && machine.takenBy !== config.instanceId) {
          return Backend.fail(MODULE, "createInstance", "NoCapacity", `pool machine ${machine.name} is busy with instance ${machine.takenBy}`)
        }
        hub.assign(machine.key, config.instanceId)
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
    terminateInstance: (instanceId, _region, backendData) =>
      Effect.sync(() => {
        const key = machineOf(backendData)
        const candidates = key !== undefined ? [hub.known(key)] : project === undefined ? [] : hub.machines(project, true)
        for (const m of candidates) {
          if (m === undefined || m.takenBy !== instanceId) continue
          // A machine's own instance row terminated (deleted by a user, found broken by the
          // engine): the machine leaves the pool, told why.
          if (hub.recording()) hub.remove(m.key, `its instance ${instanceId} was terminated`)
          else hub.assign(m.key, undefined)
        }
      }),
    unreachableHere: (instance) => {
      const machine = instance.hostname === undefined ? undefined : hub.known(instance.hostname)
      if (machine === undefined) return `pool machine ${instance.hostname} is not joined to this server replica (its connection is held by another, or by none)`
      if (machine.awaySince !== undefined) return `pool machine ${machine.name} is away (its connection dropped; it may rejoin)`
      if (machine.takenBy !== instance.id) return `pool machine ${machine.name} is another instance's now`
      return undefined
    },
    instanceEnd: (pd) =>
      Effect.sync(() => {
        if (pd.hostname === null) return { reason: "instance_unreachable" as const, message: "the instance has no pool machine" }
        const machine = hub.known(pd.hostname)
        // Connected, or away but within its time to rejoin: the job is still there.
        if (machine !== undefined && machine.takenBy === pd.instanceId) return undefined
        const gone = hub.departure(pd.hostname, true)
        if (gone === undefined && machine === undefined && Date.now() - hub.startedAt.getTime() < hub.rejoinGraceMs) {
          return undefined // this server started moments ago: the machine may be on its way back
        }
        const message = gone !== undefined
          ? gone.message
          : machine !== undefined
            ? `pool machine ${machine.name} joined again without this job's instance: the runner this job ran on is gone`
            : `pool machine ${pd.hostname} did not rejoin this server within ${Math.round(hub.rejoinGraceMs / 1000)} s of its start`
        return { reason: "instance_unreachable" as const, message }
      })
  })
