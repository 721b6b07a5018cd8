// Decoding a plugin's configuration section (a backend's, a transport's, a store's) with its
// schema: the one way every plugin reads its section, so that each refuses unknown keys and
// names every wrong field in the same words. The plugin wraps the failure in its own port's
// error (`BackendError`, `RunnerTransportError`, …) with reason `Invalid`.
import { Effect, type ParseResult, Schema } from "effect"
import { issuesLine, issuesOf } from "../config/Issues.ts"

/** Why a configuration section was refused: a message naming every wrong field, and the parse error. */
export interface ConfigIssue {
  readonly message: string
  readonly cause: ParseResult.ParseError
}

export interface ConfigDecoderOptions {
  /**
   * Whether keys the schema does not know are refused (default true). A schema that checks its
   * keys itself (e.g. one that allows a `type` key beside them) turns this off.
   */
  readonly refuseUnknownKeys?: boolean
}

/**
 * A decoder of one plugin's configuration section. `what` names the section in the message, one
 * line naming every wrong field in the words `.dstack.yml` problems use (`"slurm backend
 * configuration"` → ``invalid slurm backend configuration: `partition` is required; ssh.port:
 * expected an integer, got "x"``). An absent section decodes as `{}`.
 */
export const configDecoder = <A, I>(
  schema: Schema.Schema<A, I>,
  what: string,
  options: ConfigDecoderOptions = {}
): ((section: unknown) => Effect.Effect<A, ConfigIssue>) => {
  const decode = Schema.decodeUnknown(schema, {
    errors: "all",
    onExcessProperty: options.refuseUnknownKeys === false ? "ignore" : "error"
  })
  return (section) =>
    Effect.mapError(decode(section ?? {}), (cause) => ({
      message: `invalid ${what}: ${issuesLine(issuesOf(cause))}`,
      cause
    }))
}
