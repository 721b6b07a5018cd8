/**
 * SSH fleets on the engine's side: creating a fleet of the user's hosts from its spec (one
 * instance row per host, `pending`), provisioning each host through the `remote` backend's
 * `RemoteHosts` (pending → provisioning → idle, or terminated with `provisioning_timeout` /
 * `error` and the reason in words), checking idle hosts' runners (the `unreachable` flag), and
 * deleting a fleet (its hosts deprovisioned, terminating → terminated, then the fleet).
 *
 * The host's credentials live in its instance row (`remote_host`) and in the stored fleet spec;
 * API answers never carry them (`redactFleet`, and `Instance` has no such field).
 */
import { Duration, Effect, Either, Option, Schema, type Scope } from "effect"
import type { FleetConfiguration, SshHost } from "../domain/Configuration.ts"
import { Fleet, FleetSpec } from "../domain/Fleet.ts"
import { Instance } from "../domain/Instance.ts"
import { JobProvisioningData } from "../domain/Job.ts"
import { InstanceDisk, InstanceResources, InstanceType } from "../domain/Offer.ts"
import * as Backend from "../ports/Backend.ts"
import { decodeDocument, type StateStoreError, type StateStoreService, type StoredDocument } from "../ports/StateStore.ts"
import type { ComputeService } from "./Compute.ts"
import { errorMessage } from "./internal.ts"
import { REMOTE_BACKEND, REMOTE_HOST_FIELD, remoteHostOf } from "./RemoteAccess.ts"
import { withRunner } from "./RunnerFollower.ts"
import { waitHealthy } from "./RunnerSession.ts"

const encodeInstance = Schema.encodeSync(Instance)
const encodeFleet = Schema.encodeSync(Fleet)
const encodeProvisioning = Schema.encodeSync(JobProvisioningData)
const readInstance = decodeDocument("instance", Instance)
const readFleet = decodeDocument("fleet", Fleet)

/** Instance statuses of a host still in its fleet. */
export const LIVE_INSTANCE_STATUSES = ["pending", "provisioning", "idle", "busy", "terminating"] as const

// ---------------------------------------------------------------------------------------------
// From a spec to hosts

/** Why a fleet spec cannot be applied, per field path, in words. */
export interface FleetSpecProblem {
  readonly path: ReadonlyArray<string | number>
  readonly message: string
}

/** What an unprovisioned host looks like until provisioning detects it. */
const UNKNOWN_MACHINE = new InstanceType({
  name: "ssh",
  resources: new InstanceResources({ cpus: 0, memoryMib: 0, gpus: [], spot: false, disk: new InstanceDisk({ sizeMib: 0 }) })
})

/**
 * The hosts of an SSH fleet as the server dials them: each host's settings over `ssh_config`'s,
 * the private keys the client sent (`ssh_key`). Every host without a user or a key is a problem.
 */
export const remoteHostsOf = (configuration: FleetConfiguration): Either.Either<ReadonlyArray<Backend.RemoteHost>, ReadonlyArray<FleetSpecProblem>> => {
  const ssh = configuration.sshConfig
  if (ssh === undefined) return Either.left([{ path: ["ssh_config"], message: "the fleet has no ssh_config: only fleets of your own hosts are created in this build" }])
  const problems: Array<FleetSpecProblem> = []
  const hosts: Array<Backend.RemoteHost> = []
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(configuration.env ?? {})) {
    if (v === null) problems.push({ path: ["env", k], message: `env.${k} has no value: give it one (${k}: value)` })
    else env[k] = v
  }
  const seen = new Set<string>()
  ssh.hosts.forEach((host: SshHost, i) => {
    const at = (field: string) => ["ssh_config", "hosts", i, field]
    const user = host.user ?? ssh.user
    const privateKey = host.sshKey?.private ?? (host.identityFile === undefined ? ssh.sshKey?.private : undefined)
    const port = host.port ?? ssh.port ?? 22
    const key = `${host.hostname}:${port}`
    if (seen.has(key)) problems.push({ path: at("hostname"), message: `host ${host.hostname}:${port} is listed twice` })
    seen.add(key)
    if (user === undefined) problems.push({ path: at("user"), message: `host ${host.hostname} has no user: set ssh_config.user or the host's user` })
    if (privateKey === undefined) {
      problems.push({
        path: at("identity_file"),
        message: `host ${host.hostname} has no private key: give identity_file (the dstack CLI reads it and sends the key as ssh_key) or ssh_key.private`
      })
    }
    const jump = host.proxyJump ?? ssh.proxyJump
    const jumpKey = jump === undefined ? undefined : jump.sshKey?.private ?? (jump.identityFile === undefined ? privateKey : undefined)
    if (jump !== undefined && jumpKey === undefined) {
      problems.push({ path: host.proxyJump !== undefined ? at("proxy_jump") : ["ssh_config", "proxy_jump"], message: `the jump host ${jump.hostname} has no private key: give its identity_file (sent as ssh_key)` })
    }
    if (user === undefined || privateKey === undefined || (jump !== undefined && jumpKey === undefined)) return
    hosts.push({
      hostname: host.hostname,
      port,
      user,
      privateKey,
      ...(jump !== undefined ? { proxyJump: { hostname: jump.hostname, port: jump.port ?? 22, user: jump.user ?? user, privateKey: jumpKey! } } : {}),
      ...(host.internalIp !== undefined ? { internalIp: host.internalIp } : {}),
      ...(Object.keys(env).length > 0 ? { env } : {})
    })
  })
  return problems.length > 0 ? Either.left(problems) : Either.right(hosts)
}

/** The instance row of one host of a fleet (a new fleet, or a host added to one). */
export const hostInstance = (fleet: { id: string; name: string; project: string }, host: Backend.RemoteHost, num: number, now: Date): Instance =>
  new Instance({
    id: crypto.randomUUID(),
    projectName: fleet.project,
    backend: REMOTE_BACKEND,
    instanceType: UNKNOWN_MACHINE,
    name: `${fleet.name}-${num}`,
    fleetId: fleet.id,
    fleetName: fleet.name,
    instanceNum: num,
    hostname: host.hostname,
    sshPort: host.port,
    username: host.user,
    status: "pending",
    created: now,
    region: REMOTE_BACKEND,
    price: 0,
    // The user's hosts stay in the fleet until it is deleted.
    idleDuration: null
  })

/**
 * Stores a new fleet of SSH hosts: the fleet (`active`, as upstream) and one `pending` instance
 * per host with its credentials; the fleet processor provisions them. `spec` keeps the keys.
 */
export const createSshFleet = (
  store: StateStoreService,
  project: string,
  user: string,
  name: string,
  spec: FleetSpec,
  hosts: ReadonlyArray<Backend.RemoteHost>
): Effect.Effect<Fleet, StateStoreError> =>
  store.withTransaction(
    Effect.gen(function* () {
      const id = crypto.randomUUID()
      const now = new Date()
      const instances = hosts.map((host, num) => hostInstance({ id, name, project }, host, num, now))
      const fleet = new Fleet({ id, name, projectName: project, spec, createdAt: now, status: "active", instances: [] })
      yield* store.fleets.insert({ id, project, name, status: fleet.status, userName: user, submittedAt: now, doc: encodeFleet(fleet) })
      for (let i = 0; i < instances.length; i++) {
        const instance = instances[i]
        yield* store.instances.insert({
          id: instance.id,
          project,
          name: instance.name,
          status: instance.status,
          parentId: id,
          userName: user,
          submittedAt: now,
          doc: { ...encodeInstance(instance), [REMOTE_HOST_FIELD]: hosts[i] }
        })
      }
      return new Fleet({ ...fleet, instances }, { disableValidation: true })
    })
  )

/** A fleet row with its live instances (or every instance when `all`), by instance number. */
export const loadFleet = (store: StateStoreService, row: StoredDocument, all = false): Effect.Effect<Fleet, StateStoreError> =>
  Effect.gen(function* () {
    const fleet = yield* readFleet(row)
    const rows = yield* store.instances.list({ parentIds: [row.id], ...(all ? {} : { statuses: [...LIVE_INSTANCE_STATUSES] }) }, { ascending: true })
    const instances = yield* Effect.forEach(rows, readInstance)
    return new Fleet({ ...fleet, status: row.status as Fleet["status"], instances: [...instances].sort((a, b) => a.instanceNum - b.instanceNum) }, { disableValidation: true })
  })

// ---------------------------------------------------------------------------------------------
// The processor

export interface FleetProcessorOptions {
  readonly store: StateStoreService
  readonly compute: ComputeService
  /** Names this replica in leases. */
  readonly owner: string
  /** How long a host may take to be provisioned (tries repeat until then). Default 10 min. */
  readonly provisioningTimeoutMs: number
  /** How often idle hosts' runners are checked. */
  readonly healthCheckMs: number
  /** Capacity changed (a host became idle, or was removed): waiting jobs get a turn. */
  readonly signalCapacity: Effect.Effect<void>
}

/** How long a host's provisioning waits before it is tried again after a failure that may pass. */
const RETRY_MS = 3_000

/** Updates an instance row from its current document (optimistically, re-read on a conflict). */
const updateInstance = (
  store: StateStoreService,
  id: string,
  f: (instance: Instance, raw: Record<string, unknown>) => Record<string, unknown> | undefined,
  lease?: string
) =>
  Effect.gen(function* () {
    for (let attempt = 0; attempt < 20; attempt++) {
      const row = yield* store.instances.get(id)
      const instance = yield* readInstance(row)
      const next = f(instance, row.doc as Record<string, unknown>)
      if (next === undefined) return
      const result = yield* store.instances
        .update(id, { status: String(next.status), doc: next }, { expectedVersion: row.version, ...(lease !== undefined ? { lease } : {}) })
        .pipe(Effect.either)
      if (result._tag === "Right") return
      if (result.left.reason !== "Conflict") return yield* Effect.fail(result.left)
    }
  })

const patchInstance = (instance: Instance, raw: Record<string, unknown>, patch: Partial<ConstructorParameters<typeof Instance>[0]>) =>
  ({ ...raw, ...encodeInstance(new Instance({ ...instance, ...patch }, { disableValidation: true })) })

/** An IPv4 address as a number, or undefined. */
const ipv4 = (ip: string): number | undefined => {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip)
  if (m === null) return undefined
  const parts = m.slice(1).map(Number)
  if (parts.some((p) => p > 255)) return undefined
  return ((parts[0] << 24) >>> 0) + (parts[1] << 16) + (parts[2] << 8) + parts[3]
}

/** Whether `ip` is in the network `cidr` (`10.0.0.0/24`). */
export const inNetwork = (ip: string, cidr: string): boolean => {
  const [base, bitsText] = cidr.split("/")
  const a = ipv4(ip)
  const b = ipv4(base)
  const bits = Number(bitsText)
  if (a === undefined || b === undefined || !Number.isInteger(bits)) return false
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0
  return ((a & mask) >>> 0) === ((b & mask) >>> 0)
}

/**
 * The address the other hosts of the fleet reach this one at: `internal_ip`, else the one
 * provisioning found, else the address the server dials — within `network` when it is given.
 */
export const clusterAddress = (host: Backend.RemoteHost, found: string | undefined, network: string | undefined): Either.Either<string, string> => {
  const candidates = [host.internalIp, found, host.hostname].filter((x): x is string => x !== undefined && x !== "")
  if (network === undefined) return Either.right(candidates[0])
  const inside = candidates.find((ip) => inNetwork(ip, network))
  return inside !== undefined
    ? Either.right(inside)
    : Either.left(`host ${host.hostname} has no address in network ${network} (tried ${candidates.join(", ")}): set its internal_ip, or fix ssh_config.network`)
}

/**
 * The host record with the keys provisioning saw, where none was recorded yet (trust on first
 * use): from then on the host and its jump host must present these keys.
 */
export const withHostKeys = (host: Backend.RemoteHost, provisioned: Backend.ProvisionedHost): Backend.RemoteHost => ({
  ...host,
  ...(host.hostKey === undefined && provisioned.hostKey !== undefined ? { hostKey: provisioned.hostKey } : {}),
  ...(host.proxyJump !== undefined && host.proxyJump.hostKey === undefined && provisioned.jumpHostKey !== undefined
    ? { proxyJump: { ...host.proxyJump, hostKey: provisioned.jumpHostKey } }
    : {})
})

/** Starts the fleet processor in the scope: it runs until the scope closes. */
export const startProcessor = (options: FleetProcessorOptions): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { store, compute, owner } = options
    const scope = yield* Effect.scope
    /** Instances being worked on by this replica now. */
    const working = new Set<string>()
    /** When a host's provisioning may be tried again. */
    const retryAt = new Map<string, number>()

    const remoteBackend = compute.pluginBackend(REMOTE_BACKEND).pipe(
      Effect.flatMap((backend) =>
        backend.remoteHosts === undefined
          ? Backend.fail("Fleets", "provision", "Invalid", `the ${REMOTE_BACKEND} backend of this build does not provision hosts (it has no remoteHosts)`)
          : Effect.succeed(backend.remoteHosts)
      ),
      Effect.mapError((e) =>
        e.reason === "NotFound"
          ? new Backend.BackendError({ module: "Fleets", method: "provision", reason: "NotFound", message: `no installed plugin provides the ${REMOTE_BACKEND} backend, which provisions SSH fleet hosts: add @dstack-ts/backend-ssh to the server build` })
          : e
      )
    )

    const configOf = (instance: Instance) => ({ projectName: instance.projectName, instanceName: instance.name, instanceId: instance.id, sshKeys: [] })

    /** The fleet's network, when it has one. */
    const networkOf = (fleetId: string | undefined) =>
      fleetId === undefined
        ? Effect.succeed(undefined)
        : store.fleets.get(fleetId).pipe(
          Effect.flatMap(readFleet),
          Effect.map((f) => f.spec.configuration.sshConfig?.network),
          Effect.orElseSucceed(() => undefined)
        )

    /** Provisions one pending host under a lease: idle when it is ready, else why not. */
    const provision = (row: StoredDocument, token: string) =>
      Effect.gen(function* () {
        const instance = yield* readInstance(row)
        const host = remoteHostOf(row.doc)
        const config = configOf(instance)
        const fail = (reason: string, message: string) =>
          updateInstance(store, instance.id, (i, raw) => patchInstance(i, raw, { status: "terminated", terminationReason: reason, terminationReasonMessage: message }), token)
        if (host === undefined) return yield* fail("error", "the instance has no host record (remote_host)")
        yield* updateInstance(store, instance.id, (i, raw) => (i.status === "pending" ? patchInstance(i, raw, { status: "provisioning" }) : undefined), token)
        const outcome = yield* remoteBackend.pipe(Effect.flatMap((hosts) => hosts.provision(host, config)), Effect.either)
        if (Either.isLeft(outcome)) {
          const e = outcome.left
          const message = `${e.reason}: ${e.message ?? e.reason}`
          const timedOut = Date.now() - instance.created.getTime() >= options.provisioningTimeoutMs
          if (Backend.isRetryable(e) && !timedOut) {
            // Back to pending with the reason; tried again shortly.
            retryAt.set(instance.id, Date.now() + RETRY_MS)
            return yield* updateInstance(store, instance.id, (i, raw) => patchInstance(i, raw, { status: "pending", terminationReasonMessage: message }), token)
          }
          yield* Effect.logWarning(`fleet ${instance.fleetName}: host ${host.hostname} cannot be provisioned: ${message}`)
          return yield* fail(timedOut ? "provisioning_timeout" : "error", message)
        }
        const provisioned = outcome.right
        const network = yield* networkOf(instance.fleetId)
        const address = clusterAddress(host, provisioned.internalIp, network)
        if (Either.isLeft(address)) {
          yield* remoteBackend.pipe(Effect.flatMap((hosts) => hosts.deprovision(host, config)), Effect.ignore)
          return yield* fail("error", address.left)
        }
        const pd = new JobProvisioningData({
          backend: REMOTE_BACKEND,
          instanceType: provisioned.instanceType,
          instanceId: instance.id,
          hostname: host.hostname,
          internalIp: address.right,
          region: REMOTE_BACKEND,
          price: 0,
          username: host.user,
          sshPort: host.port,
          dockerized: false,
          runnerPort: provisioned.runnerPort,
          ...(provisioned.backendData !== undefined ? { backendData: provisioned.backendData } : {})
        })
        yield* updateInstance(store, instance.id, (i, raw) =>
          i.status !== "provisioning"
            ? undefined
            : {
              ...patchInstance(i, raw, {
                status: "idle",
                instanceType: provisioned.instanceType,
                runnerPort: provisioned.runnerPort,
                backendInstanceId: instance.id,
                unreachable: false,
                terminationReasonMessage: undefined
              }),
              provisioning_data: encodeProvisioning(pd),
              [REMOTE_HOST_FIELD]: withHostKeys(remoteHostOf(raw) ?? host, provisioned)
            }, token)
        retryAt.delete(instance.id)
        yield* options.signalCapacity
      })

    /** Removes what provisioning left on a host and marks its instance terminated. */
    const deprovision = (row: StoredDocument, token: string) =>
      Effect.gen(function* () {
        const instance = yield* readInstance(row)
        const host = remoteHostOf(row.doc)
        let message: string | undefined
        if (host !== undefined) {
          const done = yield* remoteBackend.pipe(Effect.flatMap((hosts) => hosts.deprovision(host, configOf(instance))), Effect.either)
          if (Either.isLeft(done)) {
            message = `the host could not be cleaned up: ${done.left.message ?? done.left.reason}`
            yield* Effect.logWarning(`fleet ${instance.fleetName}: host ${host.hostname}: ${message}`)
          }
        }
        yield* updateInstance(store, instance.id, (i, raw) =>
          patchInstance(i, raw, {
            status: "terminated",
            terminationReason: i.terminationReason ?? "terminated_by_user",
            ...(message !== undefined ? { terminationReasonMessage: message } : {}),
            jobName: undefined
          }), token)
        yield* options.signalCapacity
      })

    /** Claims an instance row in `statuses` and works on it in the background. */
    const work = (id: string, statuses: ReadonlyArray<string>, f: (row: StoredDocument, token: string) => Effect.Effect<void, StateStoreError>) =>
      Effect.suspend(() => {
        if (working.has(id)) return Effect.void
        working.add(id)
        return store.instances.claim({ filter: { ids: [id], statuses }, owner, leaseMs: options.provisioningTimeoutMs + 60_000 }).pipe(
          Effect.flatMap((rows) =>
            rows.length === 0
              ? Effect.void
              : f(rows[0], rows[0].lease!.token).pipe(Effect.ensuring(store.instances.release(id, rows[0].lease!.token).pipe(Effect.ignore)))
          ),
          Effect.catchAllCause((cause) => Effect.logError(`fleet host ${id}: ${errorMessage(cause)}`, cause)),
          Effect.ensuring(Effect.sync(() => working.delete(id))),
          Effect.forkIn(scope),
          Effect.asVoid
        )
      })

    /** Asks each idle host's runner whether it answers, and flags those that do not. */
    const checkHealth = (rows: ReadonlyArray<StoredDocument>) =>
      Effect.forEach(rows, (row) =>
        Effect.gen(function* () {
          const instance = yield* readInstance(row)
          if (instance.backend !== REMOTE_BACKEND || working.has(instance.id)) return
          const pd = yield* Schema.decodeUnknown(JobProvisioningData)((row.doc as Record<string, unknown>).provisioning_data).pipe(Effect.option)
          if (Option.isNone(pd)) return
          const checked = yield* withRunner(compute, instance.projectName, pd.value, (client) => waitHealthy(client, 3_000)).pipe(Effect.either)
          const healthy = Either.isRight(checked)
          // Why the host is unreachable (a changed host key, a refused login, no answer) is kept on the instance.
          const why = Either.isLeft(checked) ? `unreachable: ${checked.left.message ?? checked.left.reason}` : undefined
          if (healthy === !instance.unreachable && (healthy || why === instance.terminationReasonMessage)) return
          if (healthy !== !instance.unreachable) {
            yield* Effect.logInfo(`fleet ${instance.fleetName}: host ${instance.hostname} ${healthy ? "answers again" : `is ${why}`}`)
          }
          yield* updateInstance(store, instance.id, (i, raw) =>
            i.status === "idle" ? patchInstance(i, raw, { unreachable: !healthy, terminationReasonMessage: why }) : undefined)
          if (healthy) yield* options.signalCapacity
        }).pipe(Effect.catchAll((e) => Effect.logWarning(`fleet health check: ${errorMessage(e)}`))), { concurrency: 8, discard: true })

    /** One pass: pending hosts provisioned, deleted fleets' hosts removed, fleets finished. Answers whether work is left. */
    const pass = (withHealth: boolean): Effect.Effect<boolean> =>
      Effect.gen(function* () {
        // Fleets being deleted: their hosts that are not running a job go.
        const terminating = yield* store.fleets.list({ statuses: ["terminating"] })
        for (const fleetRow of terminating) {
          const hosts = yield* store.instances.list({ parentIds: [fleetRow.id], statuses: [...LIVE_INSTANCE_STATUSES] })
          if (hosts.length === 0) {
            const fleet = yield* readFleet(fleetRow)
            yield* store.fleets.update(fleetRow.id, { status: "terminated", deleted: true, doc: encodeFleet(new Fleet({ ...fleet, status: "terminated", instances: [] }, { disableValidation: true })) })
            continue
          }
          for (const host of hosts) {
            if (host.status === "idle" || host.status === "pending") {
              const got = yield* store.instances.claim({ filter: { ids: [host.id], statuses: ["idle", "pending"] }, owner, leaseMs: 30_000 })
              if (got.length === 0) continue
              yield* updateInstance(store, host.id, (i, raw) => patchInstance(i, raw, { status: "terminating", terminationReason: "terminated_by_user" }), got[0].lease!.token)
              yield* store.instances.release(host.id, got[0].lease!.token).pipe(Effect.ignore)
            }
          }
        }
        const rows = yield* store.instances.list({ statuses: ["pending", "provisioning", "terminating", ...(withHealth ? ["idle"] : [])] })
        const now = Date.now()
        for (const row of rows) {
          if (row.status === "terminating") yield* work(row.id, ["terminating"], deprovision)
          else if (row.status === "pending" && (retryAt.get(row.id) ?? 0) <= now) yield* work(row.id, ["pending"], provision)
        }
        if (withHealth) yield* checkHealth(rows.filter((r) => r.status === "idle"))
        return terminating.length > 0 || rows.some((r) => r.status !== "idle") || working.size > 0
      }).pipe(Effect.catchAllCause((cause) => Effect.as(Effect.logWarning(`fleet pass failed: ${errorMessage(cause)}`), true)))

    // A change to a fleet (created, deleted, hosts removed) wakes a pass at once; while hosts
    // are being provisioned or removed a pass runs every second, otherwise at each health check.
    const changes = yield* store.subscribe
    let lastHealth = 0
    const waitForFleetChange = (ms: number): Effect.Effect<void> =>
      Effect.gen(function* () {
        const until = Date.now() + ms
        while (Date.now() < until) {
          const next = yield* changes.take.pipe(Effect.timeout(Duration.millis(Math.max(1, until - Date.now()))), Effect.option)
          if (Option.isNone(next)) return
          if (next.value.kind === "fleet") return
        }
      })
    const loop = Effect.gen(function* () {
      while (true) {
        const health = Date.now() - lastHealth >= options.healthCheckMs
        if (health) lastHealth = Date.now()
        const busy = yield* pass(health)
        yield* waitForFleetChange(busy ? 1_000 : options.healthCheckMs)
      }
    })
    yield* Effect.forkIn(loop, scope)
  })
