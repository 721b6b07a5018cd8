/**
 * Fleets: named sets of instances, provisioned from backends (`nodes`) or given as SSH hosts
 * (`ssh_config`). Runs take idle instances of a fleet before provisioning new ones.
 */
import { Schema } from "effect"
import { FleetConfiguration } from "./Configuration.ts"
import { Instance } from "./Instance.ts"
import { wire, wireDefault, wireOptional } from "./internal/wire.ts"

/** The status of a fleet. */
export const FleetStatus = Schema.Literal("submitted", "active", "terminating", "terminated", "failed")
export type FleetStatus = typeof FleetStatus.Type
export const FleetStatusValues: ReadonlyArray<FleetStatus> = FleetStatus.literals

export const isFleetStatusFinished = (status: FleetStatus): boolean => status === "terminated" || status === "failed"

/** What the user asked for. */
export class FleetSpec extends Schema.Class<FleetSpec>("@dstack-ts/core/FleetSpec")({
  configuration: FleetConfiguration,
  configurationPath: wireOptional(Schema.String, "configuration_path"),
  profile: wireOptional(Schema.Record({ key: Schema.String, value: Schema.Unknown }), "profile")
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
