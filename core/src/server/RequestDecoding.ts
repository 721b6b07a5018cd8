// How the router decodes a JSON request body: by the route's schema, every problem reported,
// and `null` on an optional key read as the key's absence — the upstream Python client sends
// each unset optional field as `null` (domain/internal/nullAsAbsent.ts). A key the schema does
// not know is nothing this server carries out: it is accepted only while it holds upstream's
// default for it (its pydantic model's default, from UpstreamRequestFields.ts, or null, empty,
// absent), since upstream's client sends every field it has; any other value is refused with a
// 400 naming each such key, never accepted and ignored.
import { Either, ParseResult, Schema } from "effect"
import { jsonExcerpt } from "../domain/Grammar.ts"
import { nullAsAbsent } from "../domain/internal/nullAsAbsent.ts"
import { ApiError } from "./ApiError.ts"
import { UPSTREAM_BODIES, UPSTREAM_MODELS } from "./UpstreamRequestFields.ts"
import { formatPath } from "../config/Issues.ts"

/** A type of upstream's request models, as the unknown-key check walks it. */
export type UpstreamShape =
  | "scalar"
  | { readonly model: string }
  | { readonly list: UpstreamShape }
  | { readonly dict: UpstreamShape }
  | { readonly union: ReadonlyArray<UpstreamShape> }
  | { readonly literal: ReadonlyArray<unknown> }

/** One field of an upstream model: its default as JSON (null when required) and its type. */
export interface UpstreamField {
  readonly default: unknown
  readonly required: boolean
  readonly type: UpstreamShape
}
export type UpstreamModel = Readonly<Record<string, UpstreamField>>

/** `/api/project/:project_name/runs/get_plan` as upstream writes it (`{project_name}`). */
export const upstreamPath = (path: string): string => path.replace(/:([A-Za-z_]+)/g, "{$1}")

/** The upstream model of a route's body, or undefined for a route upstream has not. */
export const upstreamBody = (method: string, path: string): UpstreamShape | undefined => UPSTREAM_BODIES[`${method} ${upstreamPath(path)}`]

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/** The members of `shape` that `value` may be: models whose literal-typed fields agree with it. */
const members = (shape: UpstreamShape, value: unknown): ReadonlyArray<UpstreamShape> => {
  if (typeof shape === "string" || !("union" in shape)) return [shape]
  return shape.union.flatMap((s) => members(s, value)).filter((s) => {
    if (typeof s === "string" || !("model" in s) || !isObject(value)) return true
    const model = UPSTREAM_MODELS[s.model]
    return model === undefined || Object.entries(model).every(([k, f]) =>
      typeof f.type === "string" || !("literal" in f.type) || value[k] === undefined || value[k] === null || f.type.literal.includes(value[k]))
  })
}

/**
 * Upstream's field at `path` (from a value of type `shape`, `value` being the request's JSON
 * there), or undefined when upstream has no such field.
 */
export const upstreamFieldAt = (shape: UpstreamShape | undefined, value: unknown, path: ReadonlyArray<PropertyKey>): UpstreamField | undefined => {
  if (shape === undefined || path.length === 0) return undefined
  const [head, ...rest] = path
  for (const s of members(shape, value)) {
    if (typeof s === "string" || "literal" in s || "union" in s) continue
    let found: UpstreamField | undefined
    if ("list" in s) {
      if (typeof head === "number" && Array.isArray(value)) found = upstreamFieldAt(s.list, value[head], rest)
    } else if ("dict" in s) {
      if (isObject(value)) found = upstreamFieldAt(s.dict, value[head as string], rest)
    } else {
      const field = UPSTREAM_MODELS[s.model]?.[head as string]
      if (field !== undefined) found = rest.length === 0 ? field : upstreamFieldAt(field.type, isObject(value) ? value[head as string] : undefined, rest)
    }
    if (found !== undefined) return found
  }
  return undefined
}

const isEmpty = (u: unknown) => (Array.isArray(u) ? u.length === 0 : isObject(u) && Object.keys(u).length === 0)

const equal = (a: unknown, b: unknown): boolean => {
  if (a === b) return true
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => equal(x, b[i]))
  if (isObject(a) && isObject(b)) {
    const keys = Object.keys(a)
    return keys.length === Object.keys(b).length && keys.every((k) => k in b && equal(a[k], b[k]))
  }
  return false
}

/**
 * Whether `value` leaves a field at upstream's default: null, the default itself, or empty
 * where the default is null or empty. A field upstream has not defaults to null.
 */
export const isUpstreamDefault = (value: unknown, field: UpstreamField | undefined): boolean => {
  if (value === null || value === undefined) return true
  const def = field?.default ?? null
  return equal(value, def) || (isEmpty(value) && (def === null || isEmpty(def)))
}

const at = (value: unknown, path: ReadonlyArray<PropertyKey>): unknown =>
  path.reduce<unknown>((v, k) => (Array.isArray(v) ? v[k as number] : isObject(v) ? v[k as string] : undefined), value)

/** `run_spec.configuration.volumes[0].name`: a path as messages write it. */
export { formatPath }

const show = (value: unknown): string => (value === undefined ? "undefined" : jsonExcerpt(value, 64))

/**
 * The refusal of the keys of `input` that `schema` does not know (the `Unexpected` issues of a
 * strict decoding) and that hold a value other than upstream's default; undefined when all of
 * them are at their defaults.
 */
const refuseUnknown = (error: ParseResult.ParseError, input: unknown, body: UpstreamShape | undefined): ApiError | undefined => {
  const seen = new Set<string>()
  const refused: Array<{ path: ReadonlyArray<PropertyKey>; field: UpstreamField | undefined; value: unknown }> = []
  for (const issue of ParseResult.ArrayFormatter.formatErrorSync(error)) {
    if (issue._tag !== "Unexpected") continue
    const name = formatPath(issue.path)
    if (seen.has(name)) continue
    seen.add(name)
    const value = at(input, issue.path)
    const field = upstreamFieldAt(body, input, issue.path)
    if (!isUpstreamDefault(value, field)) refused.push({ path: issue.path, field, value })
  }
  if (refused.length === 0) return undefined
  const msg = refused
    .map(({ path, field, value }) =>
      field === undefined
        ? `${formatPath(path)} is not a field this server knows (got ${show(value)})`
        : `${formatPath(path)} is not supported by this server (got ${show(value)}; only upstream's default ${show(field.default)} is accepted)`
    )
    .join("; ")
  return new ApiError({
    status: 400,
    detail: [{ msg, code: "invalid_request", loc: ["body", ...refused[0]!.path.map((k) => (typeof k === "symbol" ? String(k) : k)) as Array<string | number>] }]
  })
}

/**
 * The decoder of a route's request body, built once when the route is mounted: `upstream` is
 * the route's body in upstream's models (`upstreamBody`), whose defaults say which unknown keys
 * pass. A body with no unknown key decodes once; one with unknown keys decodes again leniently
 * (unknown keys dropped) when they all hold defaults. A schema error is a ParseError, the
 * router's 422; a refused key an ApiError (400).
 */
export const decodeRequest = <A, I>(schema: Schema.Schema<A, I, never>, upstream?: UpstreamShape) => {
  const lenient = nullAsAbsent(schema)
  const strict = Schema.decodeUnknownEither(lenient, { errors: "all", onExcessProperty: "error" })
  const loose = Schema.decodeUnknownEither(lenient, { errors: "all" })
  return (input: unknown): Either.Either<A, ParseResult.ParseError | ApiError> => {
    const first = strict(input)
    if (Either.isRight(first)) return first
    const second = loose(input)
    if (Either.isLeft(second)) return second
    const refused = refuseUnknown(first.left, input, upstream)
    return refused === undefined ? second : Either.left(refused)
  }
}
