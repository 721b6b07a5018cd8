/**
 * Environment variables of a run: a map (`{A: "1"}`) or a list (`["A=1", "B"]`). A bare name
 * (`B`, or `B:` with no value in the map form) is kept as `null`: its value is taken from the
 * client's environment when the run is submitted (see `resolveEnv`).
 */
import { Either, ParseResult, Schema, type SchemaAST } from "effect"
import { isPlainObject, show } from "./Grammar.ts"

/** Variable name → value; `null` means "take the value from the client environment". */
export type Env = { readonly [name: string]: string | null }

const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/

const EnvMap = Schema.Record({ key: Schema.String, value: Schema.NullOr(Schema.String) })

const decodeEnv = (u: unknown, ast: SchemaAST.AST): Either.Either<Env, ParseResult.ParseIssue> => {
  const out: Record<string, string | null> = {}
  const issues: Array<ParseResult.ParseIssue> = []
  const bad = (key: PropertyKey, actual: unknown, message: string) =>
    issues.push(new ParseResult.Pointer(key, u, new ParseResult.Type(ast, actual, message)))
  if (Array.isArray(u)) {
    u.forEach((item, i) => {
      if (typeof item !== "string") return bad(i, item, `expected NAME=value or NAME, got ${show(item)}`)
      const eq = item.indexOf("=")
      const name = eq < 0 ? item : item.slice(0, eq)
      if (!ENV_NAME_RE.test(name)) return bad(i, item, `expected NAME=value or NAME with a valid variable name, got ${show(item)}`)
      if (name in out) return bad(i, item, `variable ${name} is set twice`)
      out[name] = eq < 0 ? null : item.slice(eq + 1)
    })
  } else if (isPlainObject(u)) {
    for (const [name, value] of Object.entries(u)) {
      if (!ENV_NAME_RE.test(name)) {
        bad(name, value, `${show(name)} is not a valid variable name (letters, digits and _, not starting with a digit)`)
      } else if (value === null || typeof value === "string") out[name] = value
      else if (typeof value === "number" || typeof value === "boolean") out[name] = String(value)
      else bad(name, value, `expected a string value, got ${show(value)}`)
    }
  } else {
    return Either.left(new ParseResult.Type(ast, u, `expected a map of variables or a list of NAME=value, got ${show(u)}`))
  }
  return issues.length === 0 ? Either.right(out) : Either.left(new ParseResult.Composite(ast, u, issues as [ParseResult.ParseIssue, ...Array<ParseResult.ParseIssue>]))
}

/** Env as a map or a list; decodes to a map, encodes to the map form. */
export const Env: Schema.Schema<Env, Env | ReadonlyArray<string>> = Schema.transformOrFail(Schema.Unknown, EnvMap, {
  strict: true,
  decode: (u, _, ast) => decodeEnv(u, ast),
  encode: (env) => ParseResult.succeed(env)
}).annotations({
  identifier: "Env",
  description:
    "Environment variables: a map (`{HF_TOKEN: abc}`) or a list (`[A=1, B]`). A bare name takes its value from the client's environment at submission."
}) as never

/**
 * Fills the names left to the client (`null` values) from `clientEnv`. Fails with the names
 * that the client environment lacks.
 * @example resolveEnv({ A: "1", B: null }, { B: "2" }) // Either.right({ A: "1", B: "2" })
 */
export const resolveEnv = (
  env: Env,
  clientEnv: Readonly<Record<string, string | undefined>>
): Either.Either<Record<string, string>, ReadonlyArray<string>> => {
  const out: Record<string, string> = {}
  const missing: Array<string> = []
  for (const [name, value] of Object.entries(env)) {
    const v = value ?? clientEnv[name]
    if (v === undefined) missing.push(name)
    else out[name] = v
  }
  return missing.length === 0 ? Either.right(out) : Either.left(missing)
}
