/**
 * `POST /api/project/{project}/runner/remove` (project admin): removes a machine from the
 * project's pool for good. A connected machine is told so and stops (`dstack runner join` exits
 * 1 with the reason, without rejoining); one away (its connection dropped) is gone at once. In
 * both cases the job its instance ran fails as `instance_unreachable`, saying it was removed.
 */
import { ApiErrors, jsonRoute } from "@dstack-ts/core"
import { Effect, Schema } from "effect"
import { type Hub, machineKey } from "./Hub.ts"

export const REMOVE_PATH = "/api/project/:project_name/runner/remove"

export const removeRoute = (hub: Hub) =>
  jsonRoute({
    method: "POST",
    path: REMOVE_PATH,
    summary: "Remove a machine from the project's runner pool (it is told so and does not rejoin by itself)",
    tag: "runner-pool",
    access: { project: "admin" },
    request: Schema.Struct({ name: Schema.String }),
    response: Schema.Struct({ removed: Schema.String }),
    handler: (input, ctx) =>
      Effect.gen(function*() {
        const project = ctx.projectName!
        const key = machineKey(project, input.name)
        const by = ctx.principal?.username ?? "an admin"
        if (!hub.remove(key, `by ${by}`)) {
          return yield* Effect.fail(ApiErrors.notFound(`no pool machine ${JSON.stringify(input.name)} is joined to project ${project} on this server`))
        }
        return { removed: key }
      })
  })
