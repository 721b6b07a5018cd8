/**
 * Fleets: named sets of instances, provisioned from backends (`nodes`) or given as SSH hosts
 * (`ssh_config`). Runs take idle instances of a fleet before provisioning new ones.
 */
import { Schema } from "effect"
import { FleetConfiguration, type SshConfig, type SshHost, type SshKey } from "./Configuration.ts"
import { Instance } from "./Instance.ts"
import { wire, wireDefault, wireOptional } from "./internal/wire.ts"
import { InstanceOffer } from "./Offer.ts"

/** The status of a fleet. */
export const FleetStatus = Schema.Literal("submitted", "active", "terminating", "terminated", "failed")
export type FleetStatus = typeof FleetStatus.Type
export const FleetStatusValues: ReadonlyArray<FleetStatus> = FleetStatus.literals

export const isFleetStatusFinished = (status: FleetStatus): boolean => status === "terminated" || status === "failed"

/** What the user asked for. */
export class FleetSpec extends Schema.Class<FleetSpec>("@dstack-ts/core/FleetSpec")({
  configuration: FleetConfiguration,
  configurationPath: wireOptional(Schema.String, "configuration_path"),
  /**
   * Upstream's profile the spec was made with; upstream's `FleetSpec` requires one (its clients
   * send their `default` profile), so a spec given without one carries that.
   */
  profile: wireDefault(Schema.Record({ key: Schema.String, value: Schema.Unknown }), "profile", () => ({ name: "default" }))
}) {}

/** A fleet as the server keeps it, with its instances. */
export class Fleet extends Schema.Class<Fleet>("@dstack-ts/core/Fleet")({
  id: Schema.String,
  name: Schema.String,
  projectName: wire(Schema.String, "project_name"),
  spec: FleetSpec,
  createdAt: wire(Schema.Date, "created_at"),
  status: FleetStatus,
  statusMessage: wireOptional(Schema.String, "status_message"),
  instances: wireDefault(Schema.Array(Instance), "instances", () => [])
}) {}

/** The fleet's instances that can take a job now. */
export const idleInstances = (fleet: Fleet): ReadonlyArray<Instance> =>
  fleet.instances.filter((instance) => instance.status === "idle" && !instance.unreachable)

/** Whether applying a fleet plan creates a fleet or replaces the one of the same name. */
export const FleetApplyAction = Schema.Literal("create", "update")
export type FleetApplyAction = typeof FleetApplyAction.Type

/** What `fleets/get_plan` answers: the hosts (as offers) the fleet would get, and what applying does. */
export class FleetPlan extends Schema.Class<FleetPlan>("@dstack-ts/core/FleetPlan")({
  projectName: wire(Schema.String, "project_name"),
  user: Schema.String,
  spec: FleetSpec,
  effectiveSpec: wireOptional(FleetSpec, "effective_spec"),
  /** The fleet of the same name that applying would replace. */
  currentResource: wireOptional(Fleet, "current_resource"),
  offers: Schema.Array(InstanceOffer),
  totalOffers: wire(Schema.Int, "total_offers"),
  maxOfferPrice: wireOptional(Schema.NullOr(Schema.Number), "max_offer_price"),
  action: wireDefault(FleetApplyAction, "action", () => "create" as const)
}) {}

const withoutPrivate = (key: SshKey | undefined): SshKey | undefined => (key === undefined ? undefined : { public: key.public })

/**
 * The fleet spec as an API answer shows it: every `ssh_key` keeps only its public half. The
 * server keeps private keys in its records and never answers them.
 */
export const redactFleetSpec = (spec: FleetSpec): FleetSpec => {
  const ssh = spec.configuration.sshConfig
  if (ssh === undefined) return spec
  const redactJump = (j: SshConfig["proxyJump"]) =>
    j === undefined ? undefined : { ...j, ...(j.sshKey !== undefined ? { sshKey: withoutPrivate(j.sshKey)! } : {}) }
  const host = (h: SshHost): SshHost => ({
    ...h,
    ...(h.sshKey !== undefined ? { sshKey: withoutPrivate(h.sshKey)! } : {}),
    ...(h.proxyJump !== undefined ? { proxyJump: redactJump(h.proxyJump)! } : {})
  })
  const sshConfig: SshConfig = {
    ...ssh,
    ...(ssh.sshKey !== undefined ? { sshKey: withoutPrivate(ssh.sshKey)! } : {}),
    ...(ssh.proxyJump !== undefined ? { proxyJump: redactJump(ssh.proxyJump)! } : {}),
    hosts: ssh.hosts.map(host)
  }
  return new FleetSpec({ ...spec, configuration: { ...spec.configuration, sshConfig } }, { disableValidation: true })
}

/** The fleet as an API answer shows it (see `redactFleetSpec`). */
export const redactFleet = (fleet: Fleet): Fleet =>
  new Fleet({ ...fleet, spec: redactFleetSpec(fleet.spec) }, { disableValidation: true })
