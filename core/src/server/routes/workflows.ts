// /api/project/{p}/workflows/*: planning a workflow from the workflow files the client sends,
// with the providers of this server's plugins. A bad file is a 400 listing every problem at its
// file:line:column; the jobs are then run by the client as task runs on the same engine.
import { Effect } from "effect"
import * as Api from "../../api/workflows.ts"
import { formatConfigurationIssue } from "../../config/ConfigurationError.ts"
import { PluginHost } from "../../plugin/PluginHost.ts"
import { catalogOf, planWorkflow } from "../../workflows/WorkflowPlan.ts"
import { parseWorkflowFiles } from "../../workflows/WorkflowFiles.ts"
import { ApiError } from "../ApiError.ts"
import { jsonRoute } from "../Route.ts"

export const workflowRoutes = [
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/workflows/get_plan", summary: "Plan a workflow and its dependencies from the workflow files", tag: "workflows", access: { project: "user" },
    request: Api.WorkflowPlanRequest, response: Api.WorkflowPlanResponse,
    handler: (input) =>
      Effect.gen(function* () {
        const host = yield* PluginHost
        const files = yield* parseWorkflowFiles(input.files)
        return yield* planWorkflow(files, input.workflow, catalogOf(host.contributions("providers")), {
          overrides: input.variables,
          ...(input.codeHash === undefined ? {} : { codeHash: input.codeHash }),
          ...(input.runName === undefined ? {} : { runName: input.runName })
        })
      }).pipe(
        Effect.mapError((error) =>
          new ApiError({
            status: 400,
            detail: error.issues.map((issue) => ({ msg: formatConfigurationIssue(issue), code: "invalid_request" as const }))
          })
        )
      )
  })
]
