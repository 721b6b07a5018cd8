/**
 * What a backend can give: instance types with their concrete resources, and offers (an
 * instance type in a region at a price, with its availability). Offers from every backend are
 * merged, filtered by requirements and sorted by price when a run is planned.
 */
import { Schema } from "effect"
import { wire, wireDefault, wireOptional } from "./internal/wire.ts"

/** One GPU (or other accelerator) of an instance. */
export class InstanceGpu extends Schema.Class<InstanceGpu>("@dstack-ts/core/InstanceGpu")({
  name: Schema.String,
  memoryMib: wire(Schema.Number, "memory_mib"),
  vendor: wireDefault(Schema.Literal("nvidia", "amd", "google", "intel"), "vendor", () => "nvidia" as const)
}) {}

/** The disk of an instance. */
export class InstanceDisk extends Schema.Class<InstanceDisk>("@dstack-ts/core/InstanceDisk")({
  sizeMib: wire(Schema.Number, "size_mib")
}) {}

/** Concrete resources of an instance type (not a requirement: numbers, not ranges). */
export class InstanceResources extends Schema.Class<InstanceResources>("@dstack-ts/core/InstanceResources")({
  cpus: Schema.Number,
  memoryMib: wire(Schema.Number, "memory_mib"),
  gpus: wireDefault(Schema.Array(InstanceGpu), "gpus", () => []),
  spot: Schema.Boolean,
  disk: InstanceDisk,
  cpuArch: wireOptional(Schema.Literal("x86", "arm"), "cpu_arch"),
  description: wireDefault(Schema.String, "description", () => "")
}) {}

/** A named machine shape of a backend (`p4d.24xlarge`, `ssh`, `local`). */
export class InstanceType extends Schema.Class<InstanceType>("@dstack-ts/core/InstanceType")({
  name: Schema.String,
  resources: InstanceResources
}) {}

/**
 * Whether an offer can be taken now. `idle` and `busy` describe instances that already exist
 * in a fleet; the others come from a backend's catalog.
 */
export const InstanceAvailability = Schema.Literal("available", "not_available", "no_quota", "no_balance", "idle", "busy")
export type InstanceAvailability = typeof InstanceAvailability.Type
export const InstanceAvailabilityValues: ReadonlyArray<InstanceAvailability> = InstanceAvailability.literals

/**
 * An instance type a backend offers in a region at a price per hour. `backend` is the backend
 * type (`aws`, `local`, or a plugin's own), kept open so plugins can add backends.
 * An offer for an existing fleet instance names it with `instance_id`/`fleet_name`.
 */
export class InstanceOffer extends Schema.Class<InstanceOffer>("@dstack-ts/core/InstanceOffer")({
  backend: Schema.String,
  region: Schema.String,
  price: Schema.Number.pipe(Schema.nonNegative()),
  instance: InstanceType,
  availability: wireDefault(InstanceAvailability, "availability", () => "available" as const),
  availabilityZones: wireOptional(Schema.Array(Schema.String), "availability_zones"),
  instanceId: wireOptional(Schema.String, "instance_id"),
  fleetName: wireOptional(Schema.String, "fleet_name")
}) {}

/** Offers that can be provisioned or reused right now. */
export const isOfferAvailable = (offer: InstanceOffer): boolean =>
  offer.availability === "available" || offer.availability === "idle"

/** Total GPU count of an instance type, the number `DSTACK_GPUS_PER_NODE` reports. */
export const gpuCount = (resources: InstanceResources): number => resources.gpus.length
