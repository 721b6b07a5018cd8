/**
 * What a runner build takes from its plugins: the executors (how it runs jobs) and the repo
 * types beyond the built-in ones (how it materializes code). The plugins are checked by the
 * plugin host like a server build's, so a conflict or a wrong core range is refused at start.
 */
import { Effect } from "effect"
import { BUILTIN_REPO_TYPES } from "../domain/Job.ts"
import type { Executor } from "../ports/Executor.ts"
import type { Repo } from "../ports/Repo.ts"
import { PluginError, PluginProblem } from "../plugin/PluginError.ts"
import * as PluginHost from "../plugin/PluginHost.ts"

/** The runner's share of its plugins. */
export interface RunnerContributions {
  readonly executors: Readonly<Record<string, Executor>>
  readonly repos: Readonly<Record<string, Repo>>
}

/**
 * Reads the executors and repo types of a runner build's plugins; fails with a PluginError
 * listing every problem (including a plugin that contributes a built-in repo type).
 *
 * @example
 * const { executors, repos } = yield* runnerContributions([executorProcess, executorDocker])
 */
export const runnerContributions = (plugins: ReadonlyArray<unknown>): Effect.Effect<RunnerContributions, PluginError> =>
  Effect.gen(function* () {
    const host = yield* PluginHost.make(plugins)
    const executors: Record<string, Executor> = {}
    for (const c of host.contributions("executors")) executors[c.key] = c.value as Executor
    const repos: Record<string, Repo> = {}
    const problems: Array<PluginProblem> = []
    for (const c of host.contributions("repos")) {
      if (BUILTIN_REPO_TYPES.includes(c.key)) {
        problems.push(new PluginProblem({
          reason: "Conflict",
          plugin: c.plugin.name,
          message: `${c.plugin.name}@${c.plugin.version} contributes the repo type ${JSON.stringify(c.key)}, which is built into the runner: give it another name`
        }))
      } else repos[c.key] = c.value as Repo
    }
    if (problems.length > 0) return yield* Effect.fail(new PluginError({ problems }))
    return { executors, repos }
  })
