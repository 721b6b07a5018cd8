// Refuses, at plan and apply, a run whose code is of a repo type that nothing in this build
// materializes: the built-in types and those the installed plugins contribute (`repos`).
import { Effect } from "effect"
import { BUILTIN_REPO_TYPES } from "../../domain/Job.ts"
import type { RunSpec } from "../../domain/Run.ts"
import { PluginHost } from "../../plugin/PluginHost.ts"
import { ApiError, excerpt } from "../ApiError.ts"

/** The repo types this build handles, each with where it comes from, for messages. */
export const installedRepoTypes = (host: PluginHost): ReadonlyArray<{ readonly type: string; readonly from: string }> => [
  ...BUILTIN_REPO_TYPES.map((type) => ({ type, from: "built in" })),
  ...host.contributions("repos").map((c) => ({ type: c.key, from: `${c.plugin.name}@${c.plugin.version}` }))
]

/** Fails with 400 at `[...loc, "repo_data", "repo_type"]` when no built-in or plugin repo handles the spec's repo type. */
export const refuseUnknownRepoType = (
  runSpec: RunSpec,
  loc: ReadonlyArray<string>
): Effect.Effect<void, ApiError, PluginHost> =>
  Effect.flatMap(PluginHost, (host) => {
    const type = runSpec.repoData.repoType
    const installed = installedRepoTypes(host)
    if (installed.some((t) => t.type === type)) return Effect.void
    const shown = JSON.stringify(excerpt(type))
    const list = installed.map((t) => `${t.type} (${t.from})`).join(", ")
    return Effect.fail(
      new ApiError({
        status: 400,
        detail: [{
          msg: `repo_type ${shown} is not handled by any installed plugin; this server handles: ${list}. Install the plugin that contributes the ${shown} repo type in the server build`,
          code: "invalid_request" as const,
          loc: [...loc, "repo_data", "repo_type"]
        }]
      })
    )
  })
