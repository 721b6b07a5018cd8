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
/** A first-party (upstream) backend type. */
export type KnownBackendType = (typeof BACKEND_TYPES)[number]
/**
 * A backend type: one of upstream's, or one that a backend plugin contributes (any lowercase
 * name, e.g. `fake-cloud`, `acme/gpu-cloud`); whether a server has it is checked when planning.
 */
export type BackendType = KnownBackendType | (string & {})

const ALIASES: Record<string, KnownBackendType> = { ssh: "remote" }
const PLUGIN_BACKEND = /^[a-z][a-z0-9._-]*(\/[a-z0-9._-]+)?$/

/** Parses a backend name, case-insensitively, with `ssh` read as `remote`. */
export const parseBackendType = (input: unknown): Either.Either<BackendType, string> => {
  if (typeof input === "string") {
    const name = input.trim().toLowerCase()
    if ((BACKEND_TYPES as ReadonlyArray<string>).includes(name)) return Either.right(name as KnownBackendType)
    if (ALIASES[name]) return Either.right(ALIASES[name])
    // A backend a plugin provides: a lowercase name like the contribution keys plugins use.
    if (PLUGIN_BACKEND.test(name)) return Either.right(name)
  }
  return Either.left(
    `expected a backend type, one of ${BACKEND_TYPES.join(", ")} (or ssh for remote), or the name of a plugin's backend (lowercase letters, digits, '.', '_', '-'), got ${show(input)}`
  )
}

/** A backend type; decodes `ssh` to `remote`. */
export const BackendType: Schema.Schema<BackendType, string> = scalar(
  Schema.String.pipe(Schema.pattern(PLUGIN_BACKEND)),
  parseBackendType,
  (b) => b
).annotations({
  identifier: "BackendType",
  description: `A backend type: ${BACKEND_TYPES.map((b) => `\`${b}\``).join(", ")} (\`ssh\` is read as \`remote\`), or one a backend plugin provides.`
}) as unknown as Schema.Schema<BackendType, string>
