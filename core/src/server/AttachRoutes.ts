/**
 * `GET /api/project/{project}/runs/attach?run_name=R&port=N[&job_num=J&replica_num=K]`: a
 * WebSocket (subprotocol `dstack-tunnel`) that carries one TCP connection to port N of a running
 * job, for every backend: the server reaches the job through the runner transport's port
 * forward, as the services proxy reaches replicas, so the user needs no key to the host.
 *
 * One code path: the upgrade hook (`attachUpgrade`) passes the request through the app, where
 * the router checks the token and the project role and the route checks the run, job and port
 * and opens the forward; the route leaves the tunnel's target for the hook, which hands it to the
 * runtime adapter. A request that is not a WebSocket upgrade gets the same checks and, when
 * they pass, a JSON answer naming the tunnel it may open (the client checks so before it listens).
 */
import { Effect, Exit, Scope } from "effect"
import type { Hono } from "hono"
import { latestSubmission } from "../domain/Job.ts"
import { isRunStatusFinished } from "../domain/Status.ts"
import { loadRunByName } from "../engine/RunRecord.ts"
import type { RunnerTransportError } from "../ports/RunnerTransport.ts"
import type { TunnelTarget, UpgradeHandler } from "../runner/adapter/types.ts"
import { ApiError, badRequest, conflict, excerpt, fromStateStore, notFound } from "./ApiError.ts"
import { openJobForward } from "./JobForward.ts"
import { rawRoute } from "./Route.ts"

/** The WebSocket subprotocol of a tunnel: binary messages are bytes, an empty one a half-close. */
export const TUNNEL_PROTOCOL = "dstack-tunnel"

const ATTACH_PATH = /^\/api\/project\/[^/]+\/runs\/attach$/

/** Requests the upgrade hook is passing through the app: only these may open a tunnel. */
const upgrading = new WeakSet<Request>()
/** The tunnel a route opened for a request of the upgrade hook. */
const opened = new WeakMap<Request, TunnelTarget>()

const unreachable = (what: string, error: RunnerTransportError) =>
  new ApiError({ status: 503, detail: [{ msg: `${what}: ${error.message ?? error.reason}`, code: "server_error" }], cause: error })

/** An integer query parameter in [min, max], or `fallback` when absent (undefined: required). */
const intParam = (query: (name: string) => string | undefined, name: string, min: number, max: number, fallback?: number) => {
  const text = query(name)
  if (text === undefined || text === "") {
    return fallback === undefined ? Effect.fail(badRequest(`Give ${name}`, ["query", name])) : Effect.succeed(fallback)
  }
  const value = Number(text)
  return Number.isInteger(value) && value >= min && value <= max
    ? Effect.succeed(value)
    : Effect.fail(badRequest(`${name} must be an integer from ${min} to ${max}, not ${excerpt(text)}`, ["query", name]))
}

export const attachRoutes = [
  rawRoute({
    method: "GET",
    path: "/api/project/:project_name/runs/attach",
    summary: "A WebSocket (subprotocol dstack-tunnel) carrying one TCP connection to a port the run's job exposes",
    tag: "runs",
    access: { project: "user" },
    requestDescription: "Query: run_name, port, job_num (default 0), replica_num (default 0); headers: Upgrade: websocket, Sec-WebSocket-Protocol: dstack-tunnel",
    responseDescription: "101 Switching Protocols; then binary messages carry the bytes both ways, an empty one ends its sender's side. Without Upgrade: the checks alone, answered with {run_name, job_num, replica_num, port, protocol}",
    handler: (ctx) =>
      Effect.gen(function* () {
        const project = ctx.projectName!
        const query = (name: string) => ctx.hono.req.query(name)
        const runName = query("run_name")
        if (runName === undefined || runName === "") return yield* Effect.fail(badRequest("Give run_name", ["query", "run_name"]))
        const port = yield* intParam(query, "port", 1, 65535)
        const jobNum = yield* intParam(query, "job_num", 0, 1_000_000, 0)
        const replicaNum = yield* intParam(query, "replica_num", 0, 1_000_000, 0)
        const { record } = yield* loadRunByName(project, runName).pipe(
          Effect.mapError((e) => (e.reason === "NotFound" ? notFound(`Run ${excerpt(runName)} does not exist in project ${excerpt(project)}`) : fromStateStore(e)))
        )
        const run = record.run
        if (isRunStatusFinished(run.status)) {
          return yield* Effect.fail(badRequest(`Run ${excerpt(runName)} is ${run.status}: there is nothing to attach to`, ["query", "run_name"]))
        }
        const job = run.jobs.find((j) => j.jobSpec.jobNum === jobNum && j.jobSpec.replicaNum === replicaNum)
        if (job === undefined) {
          return yield* Effect.fail(badRequest(`Run ${excerpt(runName)} has no job ${jobNum} of replica ${replicaNum}`, ["query", "job_num"]))
        }
        const exposed = [...new Set([...job.jobSpec.appSpecs.map((a) => a.port), ...(job.jobSpec.servicePort !== undefined ? [job.jobSpec.servicePort] : [])])]
        if (!exposed.includes(port)) {
          const which = exposed.length === 0 ? "it exposes none" : `it exposes ${exposed.join(", ")}`
          return yield* Effect.fail(badRequest(`Port ${port} is not a port of run ${excerpt(runName)}'s job (${which}; list it under \`ports\`)`, ["query", "port"]))
        }
        const sub = latestSubmission(job)
        const pd = sub?.jobProvisioningData
        if (sub === undefined || sub.status !== "running" || pd === undefined || pd.hostname === null || pd.hostname === "") {
          return yield* Effect.fail(conflict(`Job ${jobNum} of run ${excerpt(runName)} is ${sub?.status ?? "not submitted"}, not running yet: try again once it runs`))
        }
        const request = ctx.hono.req.raw
        if (!upgrading.has(request)) {
          // A check without a tunnel: the client asks it before it listens.
          return Response.json({ run_name: runName, job_num: jobNum, replica_num: replicaNum, port, protocol: TUNNEL_PROTOCOL })
        }
        const scope = yield* Scope.make()
        const forwarded = yield* openJobForward(project, pd, port, sub.id).pipe(
          Scope.extend(scope),
          Effect.mapError(({ step, error }) =>
            step === "transport"
              ? unreachable(`No transport reaches ${pd.backend} instances`, error)
              : step === "target"
              ? unreachable(`Cannot reach the instance of run ${runName}`, error)
              : unreachable(`Cannot reach port ${port} of run ${runName} on ${pd.hostname}`, error)
          ),
          Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : Scope.close(scope, Exit.void)))
        )
        opened.set(request, {
          kind: "tcp",
          host: forwarded.localHost,
          port: forwarded.localPort,
          ...(forwarded.connect === undefined ? {} : { connect: forwarded.connect }),
          protocol: TUNNEL_PROTOCOL,
          done: () => void Effect.runFork(Scope.close(scope, Exit.void))
        })
        return new Response(null, { status: 204 })
      })
  })
]

/**
 * For a route of a plugin that carries a WebSocket to a TCP port (a runner pool's join): hands
 * the upgrade of `request` on as `target`. False when the request is not one the upgrade hook
 * passes through the app (a plain HTTP request): the route then answers it itself.
 */
export const openTunnel = (request: Request, target: TunnelTarget): boolean => {
  if (!upgrading.has(request)) return false
  opened.set(request, target)
  return true
}

/** A route path in Hono's syntax (`/api/project/:project_name/x`) as a pattern of request paths. */
export const routePathPattern = (path: string): RegExp =>
  new RegExp(`^${path.split("/").map((part) => (part.startsWith(":") ? "[^/]+" : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))).join("/")}$`)

/**
 * The server's upgrade hook: attach requests go through the app (and so through the router's
 * checks and the route above); any other upgrade goes to `other` (the services proxy).
 */
export const attachUpgrade = (app: Hono, other: UpgradeHandler, tunnelPaths: ReadonlyArray<RegExp> = []): UpgradeHandler => async (request, clientIp) => {
  const path = new URL(request.url).pathname
  if (!ATTACH_PATH.test(path) && !tunnelPaths.some((p) => p.test(path))) return other(request, clientIp)
  upgrading.add(request)
  const response = await app.fetch(request)
  upgrading.delete(request)
  const target = opened.get(request)
  if (target === undefined) return response
  opened.delete(request)
  return target
}
