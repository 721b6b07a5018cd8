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
 * Forwards a free local port to `port` of the job of `project` that runs on `pd`'s instance
 * (`"runner"`: the runner's HTTP port) until the scope closes.
 */
export const openJobForward = (
  project: string,
  pd: JobProvisioningData,
  port: number | "runner"
): Effect.Effect<ForwardedPort, JobForwardError, Compute | Scope.Scope> =>
  Effect.gen(function* () {
    const compute = yield* Compute
    const transport = yield* compute.transport(pd.backend).pipe(Effect.mapError((error): JobForwardError => ({ step: "transport", error })))
    const target = yield* compute.target(project, pd).pipe(Effect.mapError((error): JobForwardError => ({ step: "target", error })))
    return yield* Effect.gen(function* () {
      if (port === "runner") return yield* transport.forward(target, 0, target.runnerPort)
      const hostPort = yield* transport.connect(target).pipe(
        Effect.flatMap((client) => client.fetch("/api/job_runtime_data")),
        Effect.flatMap((res) =>
          Effect.promise(() => (res.ok ? (res.json() as Promise<{ ports?: Record<string, number> }>) : Promise.resolve({} as { ports?: Record<string, number> })).catch(() => ({}) as { ports?: Record<string, number> }))
        ),
        Effect.map((data) => data.ports?.[String(port)] ?? port),
        Effect.scoped
      )
      return yield* transport.forward(target, 0, hostPort)
    }).pipe(Effect.mapError((error): JobForwardError => ({ step: "forward", error })))
  })
