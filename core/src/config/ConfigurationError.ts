/**
 * The error of loading a configuration file: every problem found, each with its position in
 * the file, the field path and what was expected, printed like a compiler's diagnostics.
 */
import { Schema } from "effect"

/** One problem in a configuration file. `line` and `column` are 1-based. */
export const ConfigurationIssue = Schema.Struct({
  file: Schema.String,
  line: Schema.Number,
  column: Schema.Number,
  /** The field path, such as `resources.gpu.memory` or `commands[2]`; empty for the whole file. */
  path: Schema.String,
  message: Schema.String
})
export type ConfigurationIssue = typeof ConfigurationIssue.Type

/** Formats one issue as `file:line:col  path  message`. */
export const formatConfigurationIssue = (issue: ConfigurationIssue): string =>
  `${issue.file}:${issue.line}:${issue.column}  ${issue.path === "" ? "(file)" : issue.path}  ${issue.message}`

/**
 * A configuration file could not be read or is invalid. `issues` lists every problem at once.
 * @example
 * // .dstack.yml:3:1  workdir  unknown key `workdir`; did you mean `working_dir`?
 */
export class ConfigurationError extends Schema.TaggedError<ConfigurationError>("@dstack-ts/core/ConfigurationError")(
  "ConfigurationError",
  { file: Schema.String, issues: Schema.Array(ConfigurationIssue) }
) {
  override get message(): string {
    const n = this.issues.length
    return [
      `${this.file}: ${n} problem${n === 1 ? "" : "s"} in the configuration`,
      ...this.issues.map((i) => `  ${formatConfigurationIssue(i)}`)
    ].join("\n")
  }
}
