/**
 * The kinds of compute a project can provision from. `local` is this machine; `remote` is an
 * SSH fleet of the user's own hosts (YAML also takes `ssh` for it).
 */
import { Either, Schema } from "effect"
import { scalar, show } from "./Grammar.ts"

export const BACKEND_TYPES = [
  "aws",
  "azure",
  "cudo",
  "dstack",
  "gcp",
  "datacrunch",
  "kubernetes",
  "lambda",
  "runpod",
  "tensordock",
  "vastai",
  "local",
  "remote"
] as const
export type BackendType = (typeof BACKEND_TYPES)[number]

const ALIASES: Record<string, BackendType> = { ssh: "remote" }

/** Parses a backend name, case-insensitively, with `ssh` read as `remote`. */
export const parseBackendType = (input: unknown): Either.Either<BackendType, string> => {
  if (typeof input === "string") {
    const name = input.trim().toLowerCase()
    if ((BACKEND_TYPES as ReadonlyArray<string>).includes(name)) return Either.right(name as BackendType)
    if (ALIASES[name]) return Either.right(ALIASES[name])
  }
  return Either.left(`expected a backend type, one of ${BACKEND_TYPES.join(", ")} (or ssh for remote), got ${show(input)}`)
}

/** A backend type; decodes `ssh` to `remote`. */
export const BackendType: Schema.Schema<BackendType, string> = scalar(
  Schema.Literal(...BACKEND_TYPES),
  parseBackendType,
  (b) => b
).annotations({
  identifier: "BackendType",
  description: `A backend type: ${BACKEND_TYPES.map((b) => `\`${b}\``).join(", ")} (\`ssh\` is read as \`remote\`).`
}) as unknown as Schema.Schema<BackendType, string>
