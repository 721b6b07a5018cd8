// /api/project/{p}/services/get and /list: each service's replicas (in rotation, in flight,
// draining) and traffic (requests, errors, requests per second, latency percentiles) as this
// server's proxy counts them, with the other server replicas' requests, errors, rate and latencies added.
import { Effect } from "effect"
import { GetServiceRequest, ServiceInfo, ServiceList } from "../api/services.ts"
import { excerpt, fromStateStore, notFound } from "../server/ApiError.ts"
import { jsonRoute } from "../server/Route.ts"
import { type ServiceEntry, ServiceRegistry } from "./ServiceRegistry.ts"

/** A service as the API shows it. */
export const serviceInfo = (entry: ServiceEntry, now: number): ServiceInfo => {
  const metrics = entry.metrics.snapshot(now, entry.others.latencies)
  const c = entry.configuration
  return {
    runName: entry.runName,
    url: `/proxy/services/${encodeURIComponent(entry.project)}/${encodeURIComponent(entry.runName)}/`,
    model: c.model?.name,
    auth: c.auth,
    replicas: entry.replicas.map((r) => ({
      replicaNum: r.replicaNum,
      jobName: r.jobName,
      outstanding: r.outstanding,
      inRotation: r.inRotation(now),
      ready: r.ready,
      draining: r.draining
    })),
    desiredReplicas: entry.desired ?? c.replicas.min ?? 0,
    // Every server replica's (each tells the others its own; latencies by histogram).
    requests: metrics.requests + entry.others.requests,
    errors: metrics.errors + entry.others.errors,
    rps: metrics.rps + entry.others.rps,
    latencyP50Ms: metrics.latencyP50Ms,
    latencyP99Ms: metrics.latencyP99Ms,
    ...(entry.deployment !== undefined ? { deployment: { outdatedReplicas: entry.deployment.outdated, message: entry.deployment.message } } : {})
  }
}

export const serviceRoutes = [
  jsonRoute({
    method: "POST",
    path: "/api/project/:project_name/services/get",
    summary: "A service's replicas and traffic as the server's proxy sees them",
    tag: "services",
    access: { project: "user" },
    request: GetServiceRequest,
    response: ServiceInfo,
    handler: (input, ctx) =>
      Effect.flatMap(ServiceRegistry, (registry) => registry.lookup(ctx.projectName!, input.runName)).pipe(
        Effect.mapError(fromStateStore),
        Effect.flatMap((entry) =>
          entry === undefined
            ? Effect.fail(notFound(`Service ${excerpt(input.runName)} does not exist in project ${excerpt(ctx.projectName!)} (or has finished)`))
            : Effect.succeed(serviceInfo(entry, Date.now())))
      )
  }),
  jsonRoute({
    method: "POST",
    path: "/api/project/:project_name/services/list",
    summary: "The project's services the proxy has served, with their replicas and traffic",
    tag: "services",
    access: { project: "user" },
    response: ServiceList,
    handler: (_input, ctx) =>
      Effect.map(ServiceRegistry, (registry) =>
        registry.entries().filter((e) => e.project === ctx.projectName).map((e) => serviceInfo(e, Date.now())))
  })
]
