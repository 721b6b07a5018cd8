// Server-wide routes: version information and the health check.
import { Effect, Schema } from "effect"
import { CORE_VERSION } from "../../plugin/CoreVersion.ts"
import { jsonRoute } from "../Route.ts"

export const ServerInfo = Schema.Struct({
  serverVersion: Schema.propertySignature(Schema.String).pipe(Schema.fromKey("server_version"))
})

export const HealthStatus = Schema.Struct({ status: Schema.Literal("running") })

export const serverRoutes = [
  jsonRoute({
    method: "POST",
    path: "/api/server/get_info",
    summary: "The server's version",
    tag: "server",
    access: "public",
    response: ServerInfo,
    handler: () => Effect.succeed({ serverVersion: CORE_VERSION })
  }),
  jsonRoute({
    method: "GET",
    path: "/healthcheck",
    summary: "Liveness probe",
    tag: "server",
    access: "public",
    response: HealthStatus,
    handler: () => Effect.succeed({ status: "running" as const })
  })
]
