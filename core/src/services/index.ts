/**
 * Services: the in-server proxy (`/proxy/services/…`, `/proxy/models/…`), the registry of
 * services and their replicas, the autoscaler, probes and per-service metrics.
 */
export * as ServiceRegistry from "./ServiceRegistry.ts"
export * as ServiceProxy from "./ServiceProxy.ts"
export { ServiceMetrics, type ServiceMetricsSnapshot } from "./ServiceMetrics.ts"
export { TrustedProxiesError } from "./ClientAddress.ts"
