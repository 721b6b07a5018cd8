// Every route upstream's dstack client (0.21) calls, and what this server does with those it
// does not have: answer upstream's "not supported" error (400, code `error`, which its client
// raises as a ServerClientError showing the message) rather than an unexplained 404. The list
// also generates docs/api.md's table of upstream routes and their state here.
import { Effect } from "effect"
import { ApiError } from "../ApiError.ts"
import type { AnyRoute } from "../Route.ts"
import { rawRoute } from "../Route.ts"

export interface UpstreamRoute {
  readonly method: "GET" | "POST"
  /** Hono path syntax, as the route would be declared here. */
  readonly path: string
  /** What it is for, in a few words. */
  readonly feature: string
  /** Why this server does not answer it yet (shown when no route of that path is mounted). */
  readonly why: string
}

const FLEETS = "SSH and cloud fleets are managed with `dstack-ts` fleet configurations in a later release"
const NOT_YET = "not implemented by dstack-ts yet"

/** The routes of upstream's client `dstack/api/server/*.py` (0.21.2). */
export const UPSTREAM_ROUTES: ReadonlyArray<UpstreamRoute> = [
  { method: "POST", path: "/api/server/get_info", feature: "server version", why: NOT_YET },
  { method: "POST", path: "/api/auth/list_providers", feature: "sign-in providers (OAuth)", why: "this server signs users in with tokens only" },
  { method: "POST", path: "/api/auth/:provider/authorize", feature: "OAuth sign-in", why: "this server signs users in with tokens only" },
  { method: "POST", path: "/api/auth/:provider/callback", feature: "OAuth sign-in", why: "this server signs users in with tokens only" },
  { method: "POST", path: "/api/users/get_my_user", feature: "users", why: NOT_YET },
  { method: "POST", path: "/api/users/list", feature: "users", why: NOT_YET },
  { method: "POST", path: "/api/users/get_user", feature: "users", why: NOT_YET },
  { method: "POST", path: "/api/users/create", feature: "users", why: NOT_YET },
  { method: "POST", path: "/api/users/update", feature: "users", why: NOT_YET },
  { method: "POST", path: "/api/users/refresh_token", feature: "users", why: NOT_YET },
  { method: "POST", path: "/api/users/delete", feature: "users", why: NOT_YET },
  { method: "POST", path: "/api/projects/list", feature: "projects", why: NOT_YET },
  { method: "POST", path: "/api/projects/create", feature: "projects", why: NOT_YET },
  { method: "POST", path: "/api/projects/delete", feature: "projects", why: NOT_YET },
  { method: "POST", path: "/api/projects/:project_name/get", feature: "projects", why: NOT_YET },
  { method: "POST", path: "/api/projects/:project_name/set_members", feature: "project members", why: NOT_YET },
  { method: "POST", path: "/api/projects/:project_name/add_members", feature: "project members", why: NOT_YET },
  { method: "POST", path: "/api/projects/:project_name/remove_members", feature: "project members", why: NOT_YET },
  { method: "POST", path: "/api/backends/list_types", feature: "backend types", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/backends/create", feature: "backends", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/backends/update", feature: "backends", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/backends/delete", feature: "backends", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/backends/:backend_name/config_info", feature: "a backend's configuration", why: "backend configurations are read with /api/project/{project_name}/backends/list" },
  { method: "POST", path: "/api/project/:project_name/repos/list", feature: "repos", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/repos/get", feature: "repos", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/repos/init", feature: "repos", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/repos/delete", feature: "repos", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/repos/upload_code", feature: "repo code", why: NOT_YET },
  { method: "POST", path: "/api/runs/list", feature: "runs", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/runs/get", feature: "runs", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/runs/get_plan", feature: "run plans", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/runs/apply", feature: "runs", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/runs/stop", feature: "runs", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/runs/delete", feature: "runs", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/logs/poll", feature: "logs", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/gpus/list", feature: "GPU availability", why: NOT_YET },
  { method: "GET", path: "/api/project/:project_name/metrics/job/:run_name", feature: "job metrics", why: "the runner does not collect metrics yet" },
  { method: "POST", path: "/api/project/:project_name/fleets/list", feature: "fleets", why: FLEETS },
  { method: "POST", path: "/api/project/:project_name/fleets/get", feature: "fleets", why: FLEETS },
  { method: "POST", path: "/api/project/:project_name/fleets/get_plan", feature: "fleet plans", why: FLEETS },
  { method: "POST", path: "/api/project/:project_name/fleets/apply", feature: "fleets", why: FLEETS },
  { method: "POST", path: "/api/project/:project_name/fleets/delete", feature: "fleets", why: FLEETS },
  { method: "POST", path: "/api/project/:project_name/fleets/delete_instances", feature: "fleet instances", why: FLEETS },
  { method: "POST", path: "/api/project/:project_name/secrets/list", feature: "secrets", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/secrets/get", feature: "secrets", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/secrets/create_or_update", feature: "secrets", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/secrets/delete", feature: "secrets", why: NOT_YET },
  { method: "POST", path: "/api/project/:project_name/gateways/list", feature: "gateways", why: "services are reached through the server, without gateways" },
  { method: "POST", path: "/api/project/:project_name/gateways/get", feature: "gateways", why: "services are reached through the server, without gateways" },
  { method: "POST", path: "/api/project/:project_name/gateways/get_plan", feature: "gateways", why: "services are reached through the server, without gateways" },
  { method: "POST", path: "/api/project/:project_name/gateways/apply", feature: "gateways", why: "services are reached through the server, without gateways" },
  { method: "POST", path: "/api/project/:project_name/gateways/create", feature: "gateways", why: "services are reached through the server, without gateways" },
  { method: "POST", path: "/api/project/:project_name/gateways/delete", feature: "gateways", why: "services are reached through the server, without gateways" },
  { method: "POST", path: "/api/project/:project_name/gateways/set_default", feature: "gateways", why: "services are reached through the server, without gateways" },
  { method: "POST", path: "/api/project/:project_name/gateways/set_wildcard_domain", feature: "gateways", why: "services are reached through the server, without gateways" },
  { method: "POST", path: "/api/project/:project_name/volumes/list", feature: "volumes", why: "volume resources (`type: volume`) are not in this build; on the kubernetes backend a run's network volume is the PersistentVolumeClaim of its name" },
  { method: "POST", path: "/api/project/:project_name/volumes/get", feature: "volumes", why: "volume resources (`type: volume`) are not in this build; on the kubernetes backend a run's network volume is the PersistentVolumeClaim of its name" },
  { method: "POST", path: "/api/project/:project_name/volumes/create", feature: "volumes", why: "volume resources (`type: volume`) are not in this build; on the kubernetes backend a run's network volume is the PersistentVolumeClaim of its name" },
  { method: "POST", path: "/api/project/:project_name/volumes/delete", feature: "volumes", why: "volume resources (`type: volume`) are not in this build; on the kubernetes backend a run's network volume is the PersistentVolumeClaim of its name" },
  { method: "POST", path: "/api/project/:project_name/exports/list", feature: "fleet exports", why: "fleets are not shared between projects here" },
  { method: "POST", path: "/api/project/:project_name/exports/create", feature: "fleet exports", why: "fleets are not shared between projects here" },
  { method: "POST", path: "/api/project/:project_name/exports/update", feature: "fleet exports", why: "fleets are not shared between projects here" },
  { method: "POST", path: "/api/project/:project_name/exports/delete", feature: "fleet exports", why: "fleets are not shared between projects here" },
  { method: "POST", path: "/api/project/:project_name/imports/list", feature: "fleet imports", why: "fleets are not shared between projects here" },
  { method: "POST", path: "/api/project/:project_name/imports/delete", feature: "fleet imports", why: "fleets are not shared between projects here" },
  { method: "POST", path: "/api/files/upload_archive", feature: "file archives (`files:`)", why: NOT_YET },
  { method: "POST", path: "/api/files/get_archive_by_hash", feature: "file archives (`files:`)", why: NOT_YET },
  { method: "POST", path: "/api/events/list", feature: "events", why: NOT_YET }
]

const key = (method: string, path: string) => `${method} ${path.replace(/:[A-Za-z_]+/g, ":")}`

/** Whether `routes` has a route for this upstream route (same method, same path shape). */
export const isServed = (routes: ReadonlyArray<AnyRoute<any>>, upstream: UpstreamRoute): boolean =>
  routes.some((r) => key(r.method, r.path) === key(upstream.method, upstream.path))

/** Upstream's answer to a route this server does not have. */
export const notSupported = (upstream: UpstreamRoute): ApiError =>
  new ApiError({
    status: 400,
    detail: [{ msg: `${upstream.feature[0]!.toUpperCase()}${upstream.feature.slice(1)} (${upstream.method} ${upstream.path.replace(/:([A-Za-z_]+)/g, "{$1}")}) is not supported by this dstack-ts server: ${upstream.why}`, code: "invalid_request" }]
  })

/**
 * A "not supported" route for every upstream route that `routes` lacks: mounted after them, so
 * a route that arrives later (a plugin's, a custom build's) takes its place.
 */
export const notSupportedRoutes = (routes: ReadonlyArray<AnyRoute<any>>): ReadonlyArray<AnyRoute<never>> =>
  UPSTREAM_ROUTES.filter((u) => !isServed(routes, u)).map((u) =>
    rawRoute({
      method: u.method,
      path: u.path,
      summary: `Not supported here: ${u.why}`,
      tag: "upstream",
      access: "public",
      handler: () => Effect.fail(notSupported(u))
    })
  )
