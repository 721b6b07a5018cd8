/**
 * Instances: the machines of a project's fleets (a cloud VM, a container host, an SSH host,
 * this machine), with their status, what they cost, and how a transport reaches their runner.
 */
import { Schema } from "effect"
import { wire, wireDefault, wireOptional } from "./internal/wire.ts"
import { InstanceType } from "./Offer.ts"
import { InstanceStatus } from "./Status.ts"

/** The runner's port inside an instance when the backend does not say otherwise (upstream). */
export const DEFAULT_RUNNER_PORT = 10999

/** One machine of a fleet. */
export class Instance extends Schema.Class<Instance>("@dstack-ts/core/Instance")({
  id: Schema.String,
  projectName: wire(Schema.String, "project_name"),
  /** The backend type that provisioned it (open: plugins add their own). */
  backend: Schema.String,
  instanceType: wire(InstanceType, "instance_type"),
  name: Schema.String,
  fleetId: wireOptional(Schema.String, "fleet_id"),
  fleetName: wireOptional(Schema.String, "fleet_name"),
  instanceNum: wireDefault(Schema.Int, "instance_num", () => 0),
  /** The job that holds the instance now (busy), if any. */
  jobName: wireOptional(Schema.String, "job_name"),
  /** How the server reaches the host (address or DNS name); absent until the backend knows it. */
  hostname: wireOptional(Schema.String, "hostname"),
  sshPort: wireOptional(Schema.Int, "ssh_port"),
  username: wireOptional(Schema.String, "username"),
  /** The runner's port on the host (see `DEFAULT_RUNNER_PORT`). */
  runnerPort: wireOptional(Schema.Int, "runner_port"),
  /** The backend's own id of the machine, for `terminate_instance`. */
  backendInstanceId: wireOptional(Schema.String, "backend_instance_id"),
  status: InstanceStatus,
  /** Set while health checks fail; after a grace period jobs on it end as instance_unreachable. */
  unreachable: wireDefault(Schema.Boolean, "unreachable", () => false),
  terminationReason: wireOptional(Schema.String, "termination_reason"),
  /** Why, in words (a provisioning error, the host that stopped answering). */
  terminationReasonMessage: wireOptional(Schema.String, "termination_reason_message"),
  created: Schema.Date,
  /** When its last job released it; idle time counts from here. */
  lastJobProcessedAt: wireOptional(Schema.Date, "last_job_processed_at"),
  region: Schema.String,
  availabilityZone: wireOptional(Schema.String, "availability_zone"),
  /** Price per hour in dollars. */
  price: Schema.Number,
  /** Seconds an idle instance is kept before termination; `null` keeps it forever. */
  idleDuration: wireDefault(Schema.NullOr(Schema.Number), "idle_duration", () => null)
}) {}

/**
 * When an idle instance is due for termination (epoch ms), or `null` if never or not idle.
 * Idle time counts from the release of its last job, else from its creation.
 */
export const instanceIdleDeadline = (instance: Instance): number | null => {
  if (instance.status !== "idle" || instance.idleDuration === null) return null
  const since = (instance.lastJobProcessedAt ?? instance.created).getTime()
  return since + instance.idleDuration * 1000
}

/** The address a transport dials to reach the instance's runner, if known. */
export const runnerAddress = (instance: Instance): { readonly host: string; readonly port: number } | null =>
  instance.hostname === undefined ? null : { host: instance.hostname, port: instance.runnerPort ?? DEFAULT_RUNNER_PORT }
