/**
 * Building blocks for the YAML shorthands of the configuration grammar: a value may be written
 * as a short string or number (`A100:80GB:2`, `8GB..`, `2h`) or as its full object form. Every
 * shorthand decodes to the object form, and encoding always yields the object form, so that
 * decode(encode(x)) == x. Not exported from the package: the schemas built with it are.
 */
import { Either, ParseResult, Schema } from "effect"
import { nullAsAbsent } from "./internal/nullAsAbsent.ts"

/**
 * JSON text of `u` cut to `max` characters ("..." ending a cut one). The walk stops once `max`
 * is passed, so a value nested 20,000 deep, or a 100 MB string, costs no more than a short one
 * (JSON.stringify of such a value overflows the stack or copies it all).
 */
export const jsonExcerpt = (u: unknown, max: number): string => {
  let out = ""
  const full = () => out.length > max
  const walk = (v: unknown): void => {
    if (full()) return
    if (typeof v === "string") out += JSON.stringify(v.length > max ? v.slice(0, max + 1) : v)
    else if (v === null || typeof v !== "object") out += JSON.stringify(v) ?? String(v)
    else if (Array.isArray(v)) {
      out += "["
      for (let i = 0; i < v.length && !full(); i++) {
        if (i > 0) out += ","
        walk(v[i])
      }
      out += "]"
    } else {
      out += "{"
      let first = true
      for (const [k, item] of Object.entries(v)) {
        if (full()) break
        if (item === undefined || typeof item === "function") continue
        out += `${first ? "" : ","}${JSON.stringify(k.length > max ? k.slice(0, max + 1) : k)}:`
        first = false
        walk(item)
      }
      out += "}"
    }
  }
  walk(u)
  return out.length > max ? `${out.slice(0, max - 3)}...` : out
}

/** A short rendering of a value for error messages. */
export const show = (u: unknown): string => {
  if (typeof u === "string") return JSON.stringify(u)
  if (u === undefined) return "nothing"
  return jsonExcerpt(u, 60)
}

export const isPlainObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/**
 * A schema that accepts the object form (decoded by `objectForm`) or a string/number shorthand
 * (decoded by `parse`). `expected` says in plain words what may be written, for errors.
 */
export const withShorthand = <A, I, R>(
  objectForm: Schema.Schema<A, I, R>,
  parse: (input: string | number) => Either.Either<A, string>,
  expected: string
): Schema.Schema<A, I | string | number, R> =>
  Schema.transformOrFail(Schema.Unknown, Schema.typeSchema(objectForm), {
    strict: true,
    decode: (u, options, ast) => {
      if (typeof u === "string" || typeof u === "number") {
        return Either.match(parse(u), {
          onLeft: (message) => ParseResult.fail(new ParseResult.Type(ast, u, message)),
          onRight: (a) => ParseResult.succeed(a)
        })
      }
      if (isPlainObject(u)) return ParseResult.decodeUnknown(nullAsAbsent(objectForm))(u, options)
      return ParseResult.fail(new ParseResult.Type(ast, u, `expected ${expected}, got ${show(u)}`))
    },
    encode: (a, options) => ParseResult.encode(objectForm)(a, options)
  }) as unknown as Schema.Schema<A, I | string | number, R>

/**
 * A schema for a scalar written as a string or number (a duration, a memory size), decoded by
 * `parse` and written back canonically by `format`.
 */
export const scalar = <A, I>(
  type: Schema.Schema<A>,
  parse: (input: unknown) => Either.Either<A, string>,
  format: (a: A) => I
): Schema.Schema<A, I | string | number> =>
  Schema.transformOrFail(Schema.Unknown, type, {
    strict: true,
    decode: (u, _, ast) =>
      Either.match(parse(u), {
        onLeft: (message) => ParseResult.fail(new ParseResult.Type(ast, u, message)),
        onRight: (a) => ParseResult.succeed(a)
      }),
    encode: (a) => ParseResult.succeed(format(a))
  }) as unknown as Schema.Schema<A, I | string | number>

/**
 * A closed set of words (`spot | on-demand | auto`) whose error lists the allowed values in one
 * message instead of one message per value.
 */
export const oneOf = <const L extends ReadonlyArray<string>>(...values: L) =>
  Schema.Literal(...(values as unknown as [L[number], ...Array<L[number]>])).annotations({
    message: (issue) => ({
      message: `expected one of ${values.join(", ")}, got ${show(issue.actual)}`,
      override: true
    })
  })
