/**
 * The one error of the plugin host: every problem found in a set of plugins, reported together
 * so that a server build is fixed in one pass, each naming the plugin and the versions involved.
 */
import { Schema } from "effect"

/** What is wrong with one plugin or between two. */
export const PluginProblemReason = Schema.Literal(
  "NotAPlugin",
  "UnsupportedContract",
  "InvalidName",
  "InvalidVersion",
  "InvalidCoreRange",
  "IncompatibleCore",
  "Duplicate",
  "Conflict",
  "InvalidContribution",
  "Missing",
  "NotLoadable"
)
export type PluginProblemReason = typeof PluginProblemReason.Type

/** One problem: its reason, the plugin it concerns (when it has a name) and a sentence. */
export class PluginProblem extends Schema.Class<PluginProblem>("@dstack-ts/core/PluginProblem")({
  reason: PluginProblemReason,
  plugin: Schema.optional(Schema.String),
  message: Schema.String
}) {}

/**
 * Raised by the plugin host when any plugin is refused; `problems` lists them all.
 *
 * @example
 * // PluginError: 2 plugin problems:
 * //   - @acme/backend-foo@2.0.0 requires @dstack-ts/core ^2.0.0, but this host runs core 0.1.0
 * //   - backend "aws" is contributed by both @a/aws@1.0.0 and @b/aws@3.1.0
 */
export class PluginError extends Schema.TaggedError<PluginError>("@dstack-ts/core/PluginError")("PluginError", {
  problems: Schema.Array(PluginProblem)
}) {
  override get message(): string {
    const n = this.problems.length
    return `${n} plugin problem${n === 1 ? "" : "s"}:\n${this.problems.map((p) => `  - ${p.message}`).join("\n")}`
  }
}
