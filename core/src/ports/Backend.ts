/**
 * The Backend port: the compute of one backend type. It answers offers for requirements,
 * provisions an instance for an offer, terminates one (idempotently) and, optionally, manages
 * volumes. `make` derives offer filtering (resources, spot policy, price) from a raw catalog.
 */
import { Context, Effect, Layer, Ref, Schema } from "effect"
import { JobProvisioningData, type JobSpec, type Requirements } from "../domain/Job.ts"
import { type InstanceOffer, type InstanceType } from "../domain/Offer.ts"
import type { JobTerminationReason } from "../domain/Status.ts"
import type { VolumeMount } from "../domain/Volume.ts"
import { matchResources } from "../domain/Resources.ts"
import type { SshAccess } from "./RunnerTransport.ts"

// ---------------------------------------------------------------------------------------------
// Errors

/** Why a backend call failed. */
export const BackendErrorReason = Schema.Literal(
  "NotFound",
  "AlreadyExists",
  "PermissionDenied",
  "NoCapacity",
  "Transport",
  "Invalid",
  "Timeout",
  "Unknown"
)
export type BackendErrorReason = typeof BackendErrorReason.Type

/**
 * The one error of the Backend port.
 * - `NoCapacity`: the offer cannot be had now (no quota, no stock, no balance); another offer or
 *   a later try may succeed.
 * - `Invalid`: bad configuration or an offer this backend did not make.
 * - `Transport` / `Timeout`: the provider's API could not be reached or did not answer.
 */
export class BackendError extends Schema.TaggedError<BackendError>("@dstack-ts/core/Backend/BackendError")(
  "BackendError",
  {
    module: Schema.String,
    method: Schema.String,
    reason: BackendErrorReason,
    message: Schema.optional(Schema.String),
    cause: Schema.optional(Schema.Defect)
  }
) {
  get isRetryable(): boolean {
    return isRetryable(this)
  }
}

/** `NoCapacity`, `Transport` and `Timeout` may pass on another try (or another offer). */
export const isRetryable = (error: BackendError): boolean =>
  error.reason === "NoCapacity" || error.reason === "Transport" || error.reason === "Timeout"

export const fail = (
  module: string,
  method: string,
  reason: BackendErrorReason,
  message: string,
  cause?: unknown
): Effect.Effect<never, BackendError> =>
  Effect.fail(new BackendError({ module, method, reason, message, ...(cause === undefined ? {} : { cause }) }))

// ---------------------------------------------------------------------------------------------
// Data

/** An offer left out of a plan and why, in words a user can act on. */
export interface ExcludedOffer {
  readonly offer: InstanceOffer
  readonly reasons: ReadonlyArray<string>
}

/** What `getOffers` answers: the offers that fit, cheapest first, and the ones that did not. */
export interface Offers {
  readonly offers: ReadonlyArray<InstanceOffer>
  readonly excluded: ReadonlyArray<ExcludedOffer>
}

/** What the server tells a backend about the instance it wants. */
export interface InstanceConfiguration {
  readonly projectName: string
  /** A readable name, e.g. `my-fleet-0`; backends use it for tags and host names. */
  readonly instanceName: string
  /** The server's id of the instance, for tags and idempotent creation. */
  readonly instanceId: string
  /** Public keys to authorise on the host (the server's and the user's). */
  readonly sshKeys: ReadonlyArray<string>
  readonly reservation?: string
  readonly tags?: Readonly<Record<string, string>>
  /**
   * The job the instance is made for. Backends whose instance is the job's own container (a
   * Kubernetes pod started from the job's image) need its image and resource bounds to create
   * it; backends that allocate per job (a batch scheduler) size and limit the allocation from it.
   */
  readonly job?: InstanceJob
  /**
   * For backends whose instance waits in a queue before it runs (a batch scheduler's pending
   * job): called with the queue's reason in words whenever it changes (`Slurm PENDING
   * (Resources)`). The job then shows as provisioning with that message until it has its instance.
   */
  readonly onPending?: (message: string) => Effect.Effect<void>
}

/** What a backend that makes one instance per job learns of that job. */
export interface InstanceJob {
  readonly jobName: string
  /** The job's image (`image`), when it has one. */
  readonly image?: string
  /** The job's resource bounds: lower bounds become requests, upper bounds limits. */
  readonly requirements: Requirements
  /** How many nodes the job's cluster has (`nodes` of a multi-node task); 1 otherwise. */
  readonly nodes?: number
  /** The ports the job serves (its `ports` and a service's port), which the server forwards to. */
  readonly ports?: ReadonlyArray<number>
  /** The job's `max_duration` in seconds, when it has one (a batch scheduler's time limit). */
  readonly maxDuration?: number
  /** The instance directories the job mounts (`/dir:/path` volumes). */
  readonly instanceMounts?: ReadonlyArray<string>
  /**
   * The job's `volumes` as written: network volumes by name and instance directories, each with
   * the path it is mounted at in the job's container (for backends that mount them themselves,
   * a Kubernetes pod's volumes).
   */
  readonly volumes?: ReadonlyArray<VolumeMount>
}

/**
 * How an instance ended on its own, as its backend saw it (a batch scheduler's time limit,
 * a preemption, a failed node, the job's allocation out of memory): the job's termination
 * reason and the backend's words for what happened.
 */
export interface InstanceEnd {
  readonly reason: JobTerminationReason
  readonly message: string
}

/** Where a volume landed. */
export interface VolumeProvisioningData {
  readonly volumeId: string
  readonly sizeGb: number
  readonly availabilityZone?: string
  readonly backendData?: string
}

/** The volume operations of backends that have network volumes. */
export interface Volumes {
  readonly create: (config: {
    readonly name: string
    readonly region: string
    readonly sizeGb: number
  }) => Effect.Effect<VolumeProvisioningData, BackendError>
  /** Idempotent: deleting a missing volume succeeds. */
  readonly delete: (volumeId: string) => Effect.Effect<void, BackendError>
}

/**
 * One host of an SSH fleet (`ssh_config`), as the server dials it. The credentials stay in the
 * server's records: they are never part of an API answer.
 */
export interface RemoteHost {
  readonly hostname: string
  /** The SSH port (default 22). */
  readonly port: number
  readonly user: string
  /** The private key (OpenSSH or PEM text) the server logs in with. */
  readonly privateKey: string
  /**
   * The host's public key (an OpenSSH public key line) recorded at its first provisioning: a
   * host presenting another one is refused. Absent until then (trust on first use).
   */
  readonly hostKey?: string
  /** The host to go through first (`proxy_jump`), with its recorded key likewise. */
  readonly proxyJump?: { readonly hostname: string; readonly port: number; readonly user: string; readonly privateKey: string; readonly hostKey?: string }
  /** The address other hosts of the fleet reach this one at (`internal_ip`), when given. */
  readonly internalIp?: string
  /** Environment for the runner (`ssh_config.hosts[].env`). */
  readonly env?: Readonly<Record<string, string>>
}

/** What provisioning found on a host and where its runner listens. */
export interface ProvisionedHost {
  /** The detected machine: CPUs, memory, disk, GPUs, architecture (in `instanceType.resources`). */
  readonly instanceType: InstanceType
  /** The runner's port on the host. */
  readonly runnerPort: number
  /** The host's address on its network as the other hosts of a cluster fleet see it. */
  readonly internalIp?: string
  /** The backend's own notes on the host (e.g. the runner's version and bundle hash); no secrets. */
  readonly backendData?: string
  /** The public keys the host (and its jump host) presented, for the server to record and require from then on. */
  readonly hostKey?: string
  readonly jumpHostKey?: string
}

/**
 * Hosts the user already has (SSH fleets): the server installs and starts the runner there
 * instead of creating a machine. Provisioning says why a host cannot be used (auth refused,
 * no Docker when an image is asked for, disk full, sudo missing) as a `BackendError`.
 */
export interface RemoteHosts {
  /** Ships the runner (re-shipped when its version changes), starts it supervised, detects resources. */
  readonly provision: (host: RemoteHost, config: InstanceConfiguration) => Effect.Effect<ProvisionedHost, BackendError>
  /** Stops the runner and removes what provisioning left on the host. Idempotent. */
  readonly deprovision: (host: RemoteHost, config: InstanceConfiguration) => Effect.Effect<void, BackendError>
}

// ---------------------------------------------------------------------------------------------
// The port

/** The compute of one backend type. */
export interface Backend {
  /** The backend type, e.g. `aws`, `local`, or a plugin's own. */
  readonly type: string
  /** Offers that fit the requirements, cheapest first, and why the others were left out. */
  readonly getOffers: (requirements: Requirements) => Effect.Effect<Offers, BackendError>
  /** Provisions an instance for one of this backend's offers. */
  readonly createInstance: (
    offer: InstanceOffer,
    config: InstanceConfiguration
  ) => Effect.Effect<JobProvisioningData, BackendError>
  /**
   * Terminates an instance by the backend's own id. Idempotent: an instance that is already
   * gone is not an error.
   */
  readonly terminateInstance: (
    instanceId: string,
    region: string,
    backendData?: string
  ) => Effect.Effect<void, BackendError>
  readonly volumes?: Volumes
  /**
   * True when each instance is made for one job (its container is that job's image): when the
   * job ends the engine terminates the instance instead of keeping it idle for another job.
   */
  readonly instancePerJob?: boolean
  /** Present on backends of hosts the user brings (the `remote` backend of SSH fleets). */
  readonly remoteHosts?: RemoteHosts
  /**
   * How the server logs in to reach the runner of an instance this backend made, for backends
   * whose runners sit behind SSH with the backend's own credentials (a Slurm login node as
   * `proxy_jump`); undefined for an instance it does not know. Credentials never go into the
   * provisioning data, which API answers show.
   */
  readonly runnerAccess?: (pd: JobProvisioningData) => SshAccess | undefined
  /**
   * Creates the instances of one multi-node job together, all or nothing (a batch scheduler's
   * one allocation of N nodes), for backends that make one instance per job. `configs` has one
   * configuration per node rank, the master (rank 0) first, each with the whole job in `job`;
   * the answer has one provisioning data per rank, in that order. On failure nothing is left
   * running. The engine uses it for a multi-node task (`nodes: N`) that no idle instances of a
   * `placement: cluster` fleet can take; each rank's instance is then terminated with its job
   * (`terminateInstance` of any rank may end the whole group).
   */
  readonly createInstanceGroup?: (
    offer: InstanceOffer,
    configs: ReadonlyArray<InstanceConfiguration>
  ) => Effect.Effect<ReadonlyArray<JobProvisioningData>, BackendError>
  /**
   * How the instance ended on its own, for backends whose instances can end without the
   * server asking (a batch scheduler's time limit, preemption, node failure); undefined while
   * it still runs or when the backend cannot tell. The engine asks when the instance's runner
   * goes away and when its job ends with an error, and ends the job with this reason instead.
   */
  readonly instanceEnd?: (pd: JobProvisioningData) => Effect.Effect<InstanceEnd | undefined, BackendError>
  /**
   * For backends whose `createInstance` (or `createInstanceGroup`) answers as soon as the
   * instance exists, before its runner can be reached (a batch scheduler's allocation that
   * starts the runner in it: the runner's port is known only once it listens): the instance's
   * provisioning data completed once its runner is up, `undefined` while it is still starting
   * (the call may wait a few seconds for it first). Data already complete is answered as it is.
   * Fails when the runner will never come up (it refused to start, the instance ended). The
   * engine asks before it hands a job to the instance, again until the answer comes or the
   * provisioning timeout passes; the job shows as pulling meanwhile (as upstream's
   * `update_provisioning_data`).
   */
  readonly updateProvisioningData?: (pd: JobProvisioningData) => Effect.Effect<JobProvisioningData | undefined, BackendError>
  /**
   * Why this server cannot reach an existing instance of this backend now, or undefined when
   * it can: for instances whose machine is reachable through one server replica only (a pool
   * machine joined to another replica, or away). The planner leaves such idle instances out,
   * with the reason, instead of handing them a job it cannot deliver.
   */
  readonly unreachableHere?: (instance: { readonly id: string; readonly hostname?: string | undefined }) => string | undefined
  /**
   * Told each time this server is about to reach the runner of an instance of this backend
   * (following a job, checking an idle instance before it takes a job). For backends whose
   * runners are processes they own (the `local` backend): an instance made by an earlier server
   * process that this one now follows becomes its own here, so that closing the server stops
   * that runner as it stops the ones it started. Must be cheap and must not throw.
   */
  readonly reached?: (pd: JobProvisioningData) => void
}

/** The tag for a program that works with one backend (a backend plugin's tests, a CLI probe). */
export const Backend: Context.Tag<Backend, Backend> = Context.GenericTag<Backend>("@dstack-ts/core/Backend")

/**
 * Checks one offer against requirements; the reasons are empty when it fits.
 * Upstream semantics: `spot: true` spot only, `false` on-demand only, `null` either.
 */
export const offerMisfits = (offer: InstanceOffer, requirements: Requirements): ReadonlyArray<string> => {
  const reasons: Array<string> = []
  const resources = offer.instance.resources
  const match = matchResources(requirements.resources, resources)
  if (match._tag === "Mismatch") reasons.push(...match.unmet)
  if (requirements.spot === true && !resources.spot) reasons.push("spot: needs a spot instance, offer is on-demand")
  if (requirements.spot === false && resources.spot) reasons.push("spot: needs an on-demand instance, offer is spot")
  if (requirements.maxPrice !== undefined && offer.price > requirements.maxPrice) {
    reasons.push(`price: ${offer.price}/h is above max_price ${requirements.maxPrice}/h`)
  }
  return reasons
}

/** Splits offers into those that fit (cheapest first) and those that do not, with reasons. */
export const filterOffers = (offers: ReadonlyArray<InstanceOffer>, requirements: Requirements): Offers => {
  const fit: Array<InstanceOffer> = []
  const excluded: Array<ExcludedOffer> = []
  for (const offer of offers) {
    const reasons = offerMisfits(offer, requirements)
    if (reasons.length === 0) fit.push(offer)
    else excluded.push({ offer, reasons })
  }
  fit.sort((a, b) => a.price - b.price)
  return { offers: fit, excluded }
}

/** The small core a backend writes; `make` completes it. */
export interface Implementation {
  readonly type: string
  /**
   * The backend's catalog for these requirements: it may pre-filter (by region, by GPU name)
   * but need not; `make` filters by resources, spot policy and price and sorts by price.
   */
  readonly catalog: (requirements: Requirements) => Effect.Effect<ReadonlyArray<InstanceOffer>, BackendError>
  readonly createInstance: Backend["createInstance"]
  /** May fail with `NotFound` for a gone instance: `make` turns that into success. */
  readonly terminateInstance: Backend["terminateInstance"]
  readonly volumes?: Volumes
  readonly runnerAccess?: Backend["runnerAccess"]
  readonly instancePerJob?: boolean
  readonly createInstanceGroup?: Backend["createInstanceGroup"]
  readonly instanceEnd?: Backend["instanceEnd"]
  readonly updateProvisioningData?: Backend["updateProvisioningData"]
  readonly unreachableHere?: Backend["unreachableHere"]
  readonly reached?: Backend["reached"]
}

/**
 * Builds a Backend from its core: offers filtered and sorted from the catalog, refusal of
 * offers of another backend type, and idempotent termination.
 */
export const make = (impl: Implementation): Backend => ({
  type: impl.type,
  getOffers: (requirements) => Effect.map(impl.catalog(requirements), (offers) => filterOffers(offers, requirements)),
  createInstance: (offer, config) =>
    offer.backend !== impl.type
      ? fail(impl.type, "createInstance", "Invalid", `an offer of backend ${offer.backend} was given to backend ${impl.type}`)
      : impl.createInstance(offer, config),
  terminateInstance: (instanceId, region, backendData) =>
    impl.terminateInstance(instanceId, region, backendData).pipe(
      Effect.catchIf((e) => e.reason === "NotFound", () => Effect.void)
    ),
  ...(impl.volumes === undefined ? {} : { volumes: impl.volumes }),
  ...(impl.runnerAccess === undefined ? {} : { runnerAccess: impl.runnerAccess }),
  ...(impl.instancePerJob === true ? { instancePerJob: true } : {}),
  ...(impl.createInstanceGroup === undefined ? {} : {
    createInstanceGroup: (offer: InstanceOffer, configs: ReadonlyArray<InstanceConfiguration>) =>
      offer.backend !== impl.type
        ? fail(impl.type, "createInstanceGroup", "Invalid", `an offer of backend ${offer.backend} was given to backend ${impl.type}`)
        : configs.length === 0
          ? fail(impl.type, "createInstanceGroup", "Invalid", "a group of no instances")
          : Effect.flatMap(impl.createInstanceGroup!(offer, configs), (pds) =>
            pds.length === configs.length
              ? Effect.succeed(pds)
              : fail(impl.type, "createInstanceGroup", "Unknown", `asked for ${configs.length} instances, made ${pds.length}`))
  }),
  ...(impl.instanceEnd === undefined ? {} : { instanceEnd: impl.instanceEnd }),
  ...(impl.updateProvisioningData === undefined ? {} : { updateProvisioningData: impl.updateProvisioningData }),
  ...(impl.unreachableHere === undefined ? {} : { unreachableHere: impl.unreachableHere }),
  ...(impl.reached === undefined ? {} : { reached: impl.reached })
})

// ---------------------------------------------------------------------------------------------
// In memory

export interface MemoryOptions {
  /** The backend type it reports (default `memory`). */
  readonly type?: string
  /** The catalog; each offer's `backend` should be `type`. */
  readonly offers: ReadonlyArray<InstanceOffer>
  /** Whether it creates a multi-node job's instances together (`createInstanceGroup`) and makes one per job. */
  readonly group?: boolean
}

/** What the memory backend has provisioned, for tests to inspect. */
export interface MemoryBackend extends Backend {
  readonly running: Effect.Effect<ReadonlyArray<string>>
}

/**
 * A backend that hands out "instances" from a fixed catalog without starting anything: for
 * tests of planning and of the engine. An offer that is not `available` fails with NoCapacity.
 */
export const makeMemory = (options: MemoryOptions): Effect.Effect<MemoryBackend> =>
  Effect.gen(function*() {
    const type = options.type ?? "memory"
    const running = yield* Ref.make<ReadonlyArray<string>>([])
    const counter = yield* Ref.make(0)
    const createInstance: Backend["createInstance"] = (offer, config) =>
        offer.availability !== "available"
          ? fail(type, "createInstance", "NoCapacity", `${offer.instance.name} in ${offer.region} is ${offer.availability}`)
          : Effect.gen(function*() {
            const n = yield* Ref.getAndUpdate(counter, (x) => x + 1)
            const instanceId = `${type}-${config.instanceName}-${n}`
            yield* Ref.update(running, (ids) => [...ids, instanceId])
            return new JobProvisioningData({
              backend: type,
              instanceType: offer.instance,
              instanceId,
              hostname: "127.0.0.1",
              region: offer.region,
              price: offer.price,
              username: "root",
              dockerized: false
            })
          })
    const backend = make({
      type,
      catalog: () => Effect.succeed(options.offers),
      createInstance,
      ...(options.group === true
        ? { instancePerJob: true, createInstanceGroup: (offer, configs) => Effect.forEach(configs, (config) => createInstance(offer, config)) }
        : {}),
      terminateInstance: (instanceId) =>
        Effect.flatMap(Ref.get(running), (ids) =>
          ids.includes(instanceId)
            ? Ref.set(running, ids.filter((id) => id !== instanceId))
            : fail(type, "terminateInstance", "NotFound", `no instance ${instanceId}`))
    })
    return { ...backend, running: Ref.get(running) }
  })

/** A memory backend as the `Backend` service. */
export const layerMemory = (options: MemoryOptions): Layer.Layer<Backend> =>
  Layer.effect(Backend, makeMemory(options))
