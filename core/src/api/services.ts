// The services API: a service's replicas and traffic as the server's proxy sees them
// (`/api/project/{p}/services/get` and `/list`), for `dstack ps -v` and SDK callers.
import { Schema } from "effect"
import { wire, wireOptional } from "../domain/internal/wire.ts"

export const GetServiceRequest = Schema.Struct({ runName: wire(Schema.String, "run_name") })

export const ServiceReplicaInfo = Schema.Struct({
  replicaNum: wire(Schema.Int, "replica_num"),
  jobName: wire(Schema.String, "job_name"),
  /** Requests sent to it whose answers have not ended. */
  outstanding: Schema.Int,
  /** Whether new requests may go to it (ready, not draining, not out after a failure). */
  inRotation: wire(Schema.Boolean, "in_rotation"),
  ready: Schema.Boolean,
  draining: Schema.Boolean
})
export type ServiceReplicaInfo = typeof ServiceReplicaInfo.Type

export const ServiceInfo = Schema.Struct({
  runName: wire(Schema.String, "run_name"),
  /** The proxy path of the service: `/proxy/services/{project}/{run}/`. */
  url: Schema.String,
  /** The model it serves at `/proxy/models/{project}/v1/`, if any. */
  model: wireOptional(Schema.String, "model"),
  auth: Schema.Boolean,
  replicas: Schema.Array(ServiceReplicaInfo),
  /** The number of replicas the autoscaler wants now (the fixed count without `scaling`). */
  desiredReplicas: wire(Schema.Int, "desired_replicas"),
  requests: Schema.Int,
  /** Answers the proxy made 5xx itself (no replica in time, a replica unreachable). */
  errors: Schema.Int,
  /** Requests per second over the last minute. */
  rps: Schema.Number,
  latencyP50Ms: wireOptional(Schema.Number, "latency_p50_ms"),
  latencyP99Ms: wireOptional(Schema.Number, "latency_p99_ms"),
  /** A rolling deployment under way (a re-applied spec): replicas still on the previous spec, and what the roll waits for. */
  deployment: Schema.optional(Schema.Struct({
    outdatedReplicas: wire(Schema.Int, "outdated_replicas"),
    message: Schema.String
  }))
})
export type ServiceInfo = typeof ServiceInfo.Type

export const ServiceList = Schema.Array(ServiceInfo)
