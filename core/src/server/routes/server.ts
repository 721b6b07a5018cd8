// Server-wide routes: version information (and the SSH proxy's host keys) and the health check.
import { Effect, Schema } from "effect"
import { CORE_VERSION } from "../../plugin/CoreVersion.ts"
import { jsonRoute } from "../Route.ts"
import { SshProxySettings } from "../SshProxyInfo.ts"

export const ServerInfo = Schema.Struct({
  serverVersion: Schema.propertySignature(Schema.String).pipe(Schema.fromKey("server_version")),
  /**
   * A dstack-ts addition (upstream's client ignores it): the SSH proxy's host keys as public
   * lines (`ssh-rsa AAAA…`), present when the server runs the proxy. `dstack attach` pins them
   * in the `ssh RUN` alias (`~/.dstack/ssh/known_hosts`).
   */
  sshproxyHostKeys: Schema.optional(
    Schema.Array(Schema.String).annotations({
      description: "dstack-ts only: the SSH proxy's host keys (`ssh-rsa AAAA…`), when the server runs it; `dstack attach` pins them in the `ssh RUN` alias"
    })
  ).pipe(Schema.fromKey("sshproxy_host_keys"))
})

export const HealthStatus = Schema.Struct({ status: Schema.Literal("running") })

export const serverRoutes = [
  jsonRoute({
    method: "POST",
    path: "/api/server/get_info",
    summary: "The server's version (and its SSH proxy's host keys)",
    tag: "server",
    access: "public",
    response: ServerInfo,
    handler: (_input, ctx) => {
      const hostKeys = ctx.service(SshProxySettings).hostKeys
      return Effect.succeed({ serverVersion: CORE_VERSION, ...(hostKeys !== undefined ? { sshproxyHostKeys: hostKeys } : {}) })
    }
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
