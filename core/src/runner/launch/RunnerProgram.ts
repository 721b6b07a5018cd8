/**
 * Which runner build a server starts on its instances: the entry file of a runner build (a
 * TypeScript source or a bundled `.mjs`). A server build provides it (`createServer({ runner:
 * { entry } })`; `dstack server` sets it to @dstack-ts/cli's runner build) and a backend that
 * starts runners reads it, unless its own configuration names an entry.
 */
import { fileURLToPath } from "node:url"
import { Context, Effect, Layer, Option } from "effect"

/** The runner build of a server. */
export interface RunnerProgramConfig {
  /**
   * The runner build's entry file: an absolute path or a `file:` URL (so a build can pass
   * `import.meta.resolve("@dstack-ts/cli/runner")` as it is).
   */
  readonly entry: string
}

export class RunnerProgram extends Context.Tag("@dstack-ts/core/RunnerProgram")<RunnerProgram, RunnerProgramConfig>() {}

/** Provides the runner build. */
export const layer = (config: RunnerProgramConfig): Layer.Layer<RunnerProgram> =>
  Layer.succeed(RunnerProgram, { entry: config.entry.startsWith("file:") ? fileURLToPath(config.entry) : config.entry })

/**
 * The runner entry a backend should start: its own configured one, else the server build's,
 * else undefined (the backend then says how to set one).
 *
 * @example
 * const entry = yield* RunnerProgram.entry(config.runnerEntry)
 */
export const entry = (configured: string | undefined): Effect.Effect<string | undefined> =>
  configured !== undefined
    ? Effect.succeed(configured)
    : Effect.map(Effect.serviceOption(RunnerProgram), Option.match({ onNone: () => undefined, onSome: (p) => p.entry }))

/** The runner program's arguments for an address and a work directory (see Runner.runnerMain). */
export const runnerArgs = (options: { readonly host: string; readonly port: number; readonly workDir: string }): ReadonlyArray<string> =>
  ["--host", options.host, "--port", String(options.port), "--work-dir", options.workDir]
