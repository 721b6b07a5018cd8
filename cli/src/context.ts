// What every command shares: the global flags (--debug, --project), the expected-failure
// type with its exit code, and how a command gets a client for the chosen project.
import { Cause, Effect, Exit, Option } from "effect"
import type { Client } from "@dstack-ts/client"
import { canPrompt, confirm } from "./ui.ts"

/** Flags accepted anywhere on the command line, before or after the command name. */
export interface GlobalOptions {
  /** Print stack traces of failures. */
  debug: boolean
  /** The project to use instead of the default one in ~/.dstack/config.yml. */
  project: string | undefined
}

export const globals: GlobalOptions = { debug: false, project: undefined }

/** The args every command lists in its help; main.ts takes them out of argv before citty parses. */
export const globalArgs = {
  project: { type: "string", description: "The project to use (default: the default project in ~/.dstack/config.yml)", valueHint: "name" },
  debug: { type: "boolean", description: "Print stack traces of failures" }
} as const

export const EXIT_OK = 0
export const EXIT_FAILURE = 1
export const EXIT_USAGE = 2

/** An expected failure: printed as one line, exit code 1 (or 2 for a usage error). */
export class CliError extends Error {
  readonly exitCode: number
  constructor(message: string, exitCode: number = EXIT_FAILURE) {
    super(message)
    this.name = "CliError"
    this.exitCode = exitCode
  }
}

/** A usage error: bad flags or arguments (exit code 2). */
export const usageError = (message: string): CliError => new CliError(message, EXIT_USAGE)

/** A client for the project chosen by --project, DSTACK_PROJECT or the config's default. */
export const clientFor = async (): Promise<Client> => {
  // Loaded here, not at the top, so that --help and --version do not load the SDK.
  const { Client } = await import("@dstack-ts/client")
  return Client.fromConfig({ projectName: globals.project })
}

/**
 * Asks before a destructive action unless `yes`; without a terminal to ask on, refuses and
 * says to pass -y.
 */
export const confirmOrFail = async (yes: boolean | undefined, question: string): Promise<void> => {
  if (yes) return
  if (!canPrompt()) throw usageError(`${question} Pass -y to confirm (there is no terminal to ask on)`)
  if (!(await confirm(question))) throw new CliError("Cancelled")
}

/** The error for a command whose server side is not in this build yet. */
export const notAvailable = (what: string): CliError =>
  new CliError(`${what} is not available in this build of dstack-ts yet`)

/** Runs an Effect at the command's edge, throwing its typed error as is. */
export const runEffect = async <A, E>(effect: Effect.Effect<A, E>): Promise<A> => {
  const exit = await Effect.runPromiseExit(effect)
  if (Exit.isSuccess(exit)) return exit.value
  const failure = Cause.failureOption(exit.cause)
  throw Option.isSome(failure) ? failure.value : Cause.squash(exit.cause)
}
