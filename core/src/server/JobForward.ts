/**
 * Opening a forward to a port of a running job, for every backend: the runner transport's
 * forward to the host port the runner reports for it (a container publishes its port on a host
 * port; a process job listens on the host itself), or to the runner's own HTTP port. The
 * attach WebSocket route and the SSH proxy both reach jobs through it.
 */
import { Effect, type Scope } from "effect"
import type { JobProvisioningData } from "../domain/Job.ts"
import { Compute } from "../engine/Compute.ts"
import type { ForwardedPort, RunnerTransportError } from "../ports/RunnerTransport.ts"

/** Upstream's runner port (`DSTACK_RUNNER_HTTP_PORT`): clients ask for it to reach the runner's own API (`/logs_ws`). */
export const RUNNER_HTTP_PORT = 10999

/** Why a forward did not open: which step failed (`step`), and the transport's error. */
export interface JobForwardError {
  readonly step: "transport" | "target" | "forward"
  readonly error: RunnerTransportError
}

/**
 * Host ports the runners reported (`/api/job_runtime_data`), by job submission and job port.
 * A submission's ports are published once, before it runs, and do not change while it runs, so
 * each is asked once: every new connection of `dstack attach` would otherwise wait for a round
 * trip to the runner (over SSH for a remote host) before its first byte. The oldest go first
 * past `HOST_PORTS_KEPT`.
 */
const hostPorts = new Map<string, number>()
const HOST_PORTS_KEPT = 4096

/** The runner's answer for a job port: the host port it is published on, or the port itself (a process job listens on the host). */
const askHostPort = (client: { readonly fetch: (path: string) => Effect.Effect<Response, RunnerTransportError> }, port: number) =>
  client.fetch("/api/job_runtime_data").pipe(
    Effect.flatMap((res) =>
      Effect.promise(() => (res.ok ? (res.json() as Promise<{ ports?: Record<string, number> }>) : Promise.resolve(undefined)).catch(() => undefined))
    ),
    Effect.map((data) => (data === undefined ? undefined : data.ports?.[String(port)] ?? port))
  )

/**
 * Forwards a free local port to `port` of the job of `project` that runs on `pd`'s instance
 * (`"runner"`: the runner's HTTP port) until the scope closes. `submissionId` names the running
 * submission, whose reported host port is then remembered for its next forwards.
 */
export const openJobForward = (
  project: string,
  pd: JobProvisioningData,
  port: number | "runner",
  submissionId?: string
): Effect.Effect<ForwardedPort, JobForwardError, Compute | Scope.Scope> =>
  Effect.gen(function* () {
    const compute = yield* Compute
    const transport = yield* compute.transport(pd.backend).pipe(Effect.mapError((error): JobForwardError => ({ step: "transport", error })))
    const target = yield* compute.target(project, pd).pipe(Effect.mapError((error): JobForwardError => ({ step: "target", error })))
    return yield* Effect.gen(function* () {
      if (port === "runner") return yield* transport.forward(target, 0, target.runnerPort)
      const key = submissionId === undefined ? undefined : `${submissionId}:${port}`
      let hostPort = key === undefined ? undefined : hostPorts.get(key)
      if (hostPort === undefined) {
        const asked = yield* transport.connect(target).pipe(Effect.flatMap((client) => askHostPort(client, port)), Effect.scoped)
        // An answer that did not come (an error status, a body that is not JSON) is not kept:
        // the port itself is tried this time, and the runner asked again next time.
        if (asked !== undefined && key !== undefined) {
          if (hostPorts.size >= HOST_PORTS_KEPT) hostPorts.delete(hostPorts.keys().next().value!)
          hostPorts.set(key, asked)
        }
        hostPort = asked ?? port
      }
      return yield* transport.forward(target, 0, hostPort)
    }).pipe(Effect.mapError((error): JobForwardError => ({ step: "forward", error })))
  })
