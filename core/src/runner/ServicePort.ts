/**
 * Where a service's replica listens. In a container it listens on the service's `port` (the
 * executor publishes it on a free host port). As processes on the host, replicas of one service
 * would collide on that port: the first replica gets it, every other replica a free port of the
 * host. Either way the job finds its port in `DSTACK_SERVICE_PORT`, and the runner reports the
 * host port in `job_runtime_data`, where the server's proxy looks for it.
 */
import * as net from "node:net"
import { Effect } from "effect"
import type { ExecutionSpec } from "../ports/Executor.ts"
import type { SubmitBody } from "./RunnerProtocol.ts"

/** A port of this host nobody listens on now. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

/** The spec with `DSTACK_SERVICE_PORT` set, and the host port a process replica listens on (undefined in a container or for a non-service). */
export const assignServicePort = (
  body: SubmitBody,
  spec: ExecutionSpec
): Effect.Effect<{ readonly spec: ExecutionSpec; readonly hostPort: { readonly containerPort: number; readonly hostPort: number } | undefined }> =>
  Effect.gen(function* () {
    const servicePort = body.jobSpec.servicePort
    if (servicePort === undefined) return { spec, hostPort: undefined }
    if (spec.image !== undefined) return { spec: { ...spec, env: { ...spec.env, DSTACK_SERVICE_PORT: String(servicePort) } }, hostPort: undefined }
    const port = body.jobSpec.replicaNum === 0 ? servicePort : yield* Effect.promise(freePort)
    return {
      spec: { ...spec, env: { ...spec.env, DSTACK_SERVICE_PORT: String(port) } },
      hostPort: { containerPort: servicePort, hostPort: port }
    }
  })
