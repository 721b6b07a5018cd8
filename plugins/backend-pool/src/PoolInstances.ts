/**
 * The instance rows of joined machines: in a server, a machine is an instance of its project
 * from the moment it joins (idle, with the resources it reported; the instances list shows it),
 * one row for the machine for as long as the same run of its agent comes back, and terminated
 * with why when it leaves, is removed, or does not rejoin. Jobs are placed on these rows like on
 * any idle instance (the engine's instance pool), so one machine is one instance.
 */
import { Instance, InstanceDisk, InstanceGpu, InstanceResources, InstanceType, JobProvisioningData, type StateStore } from "@dstack-ts/core"
import { Effect, Schema } from "effect"
import type { Hub, Machine, Observer } from "./Hub.ts"

const LIVE = ["pending", "provisioning", "idle", "busy", "terminating"]
const encodeInstance = Schema.encodeSync(Instance)
const decodeInstance = Schema.decodeUnknown(Instance)
const encodeProvisioning = Schema.encodeSync(JobProvisioningData)

/** The machine as an instance type (the same shape as its offer). */
export const instanceTypeOf = (m: Machine): InstanceType => {
  const r = m.hello.resources
  return new InstanceType({
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
}

/** How the engine reaches the machine's runner as instance `instanceId`. */
export const provisioningOf = (m: Machine, instanceId: string): JobProvisioningData =>
  new JobProvisioningData({
    backend: "pool",
    instanceType: instanceTypeOf(m),
    instanceId,
    hostname: m.key,
    region: m.project,
    price: 0,
    username: "root",
    dockerized: false,
    runnerPort: m.hello.runnerPort,
    backendData: JSON.stringify({ machine: m.key, session: m.hello.session ?? null })
  })

/**
 * Keeps the rows of `hub`'s machines in `store`. Each change is one Effect run in the
 * background, one after another per machine; a failure is logged, never swallowed silently.
 */
export const make = (hub: Hub, store: StateStore.StateStoreService): Observer => {
  const queues = new Map<string, Promise<void>>()
  const run = (m: Machine, what: string, effect: Effect.Effect<void, unknown>) => {
    const previous = queues.get(m.key) ?? Promise.resolve()
    const next = previous.then(() =>
      Effect.runPromise(effect.pipe(Effect.catchAllCause((cause) => Effect.logError(`pool machine ${m.key}: could not ${what}`, cause))))
    )
    queues.set(m.key, next)
    void next.then(() => {
      if (queues.get(m.key) === next) queues.delete(m.key)
    })
  }

  /** Changes a row (read, change, write at that version; again on a conflict). */
  const change = (id: string, f: (i: Instance) => Instance | undefined, extra: (i: Instance) => Record<string, unknown> = () => ({})) =>
    Effect.gen(function*() {
      for (let attempt = 0; attempt < 20; attempt++) {
        const row = yield* store.instances.get(id)
        const instance = yield* decodeInstance(row.doc)
        const next = f(instance)
        if (next === undefined) return
        const done = yield* store.instances.update(id, { status: next.status, doc: { ...(row.doc as object), ...encodeInstance(next), ...extra(next) } }, { expectedVersion: row.version }).pipe(Effect.either)
        if (done._tag === "Right") return
        if (done.left.reason !== "Conflict") return yield* Effect.fail(done.left)
      }
    })

  const rowsOf = (m: Machine) =>
    Effect.gen(function*() {
      const rows = yield* store.instances.list({ projects: [m.project], statuses: LIVE })
      const mine: Array<Instance> = []
      for (const row of rows) {
        const i = yield* decodeInstance(row.doc)
        if (i.backend === "pool" && i.hostname === m.key) mine.push(i)
      }
      return mine
    })

  const terminated = (i: Instance, message: string) =>
    i.status === "terminated" ? undefined : new Instance({ ...i, status: "terminated", terminationReason: "pool_machine_gone", terminationReasonMessage: message, jobName: undefined })

  return {
    joined: (m) =>
      run(m, "record it as an instance", Effect.gen(function*() {
        const rows = yield* rowsOf(m)
        const kept = rows.find((i) => i.id === m.takenBy)
        for (const i of rows) {
          if (i === kept) continue
          const why = hub.departure(m.key, true)?.message ?? `pool machine ${m.name} joined again as a new process`
          yield* change(i.id, (x) => terminated(x, why))
        }
        if (kept !== undefined) {
          yield* change(kept.id, (i) => new Instance({ ...i, instanceType: instanceTypeOf(m), runnerPort: m.hello.runnerPort, unreachable: false }), (i) => ({ provisioning_data: encodeProvisioning(provisioningOf(m, i.id)) }))
          return
        }
        const id = crypto.randomUUID()
        const instance = new Instance({
          id,
          projectName: m.project,
          backend: "pool",
          instanceType: instanceTypeOf(m),
          name: m.name,
          hostname: m.key,
          runnerPort: m.hello.runnerPort,
          username: "root",
          backendInstanceId: id,
          status: "idle",
          created: new Date(),
          lastJobProcessedAt: new Date(),
          region: m.project,
          price: 0,
          // The user's machine: never terminated for being idle.
          idleDuration: null
        })
        yield* store.instances.insert({ id, project: m.project, name: m.name, status: "idle", doc: { ...encodeInstance(instance), provisioning_data: encodeProvisioning(provisioningOf(m, id)) } })
        hub.assign(m.key, id)
      })),
    // An idle machine away is not handed a job until it is back (the engine skips `unreachable` instances).
    away: (m) =>
      m.takenBy === undefined ? undefined : run(m, "flag its instance unreachable", change(m.takenBy, (i) =>
        i.status === "idle" ? new Instance({ ...i, unreachable: true, terminationReasonMessage: `pool machine ${m.name} is away (its connection dropped)` }) : undefined)),
    back: (m) =>
      m.takenBy === undefined ? undefined : run(m, "clear its instance's unreachable flag", change(m.takenBy, (i) =>
        i.unreachable ? new Instance({ ...i, unreachable: false, terminationReasonMessage: undefined }) : undefined)),
    gone: (m, message) =>
      m.takenBy === undefined ? undefined : run(m, "record its instance terminated", change(m.takenBy, (i) => terminated(i, message)))
  }
}
