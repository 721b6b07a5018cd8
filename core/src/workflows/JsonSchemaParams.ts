/**
 * A provider program's `schema.yaml` (seed-003: a JSON Schema of the workflow's parameters) as an
 * Effect Schema, so that the planner checks a program's parameters exactly as it checks a
 * plugin provider's: every problem at its line in workflows.yaml. The keywords the seed's
 * example uses are honoured (type, properties, required, additionalProperties, items, enum,
 * const, description, default-free); any other keyword is refused naming it, so that nothing
 * written in a schema is silently ignored.
 */
import { Either, Schema } from "effect"

const HONOURED = new Set([
  "type", "properties", "required", "additionalProperties", "items", "enum", "const",
  "description", "title", "$schema", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"
])

/** A problem with the schema itself, at its JSON path (`properties.url.type`). */
export interface SchemaProblem {
  readonly path: ReadonlyArray<string | number>
  readonly message: string
  /** Point at the key rather than its value (an unsupported keyword). */
  readonly atKey?: boolean
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v)

const convert = (node: unknown, path: ReadonlyArray<string | number>, problems: Array<SchemaProblem>): Schema.Schema<any, any> => {
  if (node === true || (isObject(node) && Object.keys(node).length === 0)) return Schema.Unknown
  if (!isObject(node)) {
    problems.push({ path, message: `expected a schema (a map), got ${JSON.stringify(node)}` })
    return Schema.Unknown
  }
  for (const key of Object.keys(node)) {
    if (!HONOURED.has(key)) problems.push({ path: [...path, key], message: `the JSON Schema keyword \`${key}\` is not supported; supported: ${[...HONOURED].join(", ")}`, atKey: true })
  }
  const annotate = <S extends Schema.Schema<any, any>>(s: S): S =>
    (typeof node.description === "string" ? s.annotations({ description: node.description }) : s) as S
  if (node.const !== undefined) return annotate(Schema.Literal(node.const as any) as any)
  if (node.enum !== undefined) {
    if (!Array.isArray(node.enum) || node.enum.length === 0 || node.enum.some((v) => v !== null && typeof v === "object")) {
      problems.push({ path: [...path, "enum"], message: "expected a non-empty list of strings, numbers or booleans" })
      return Schema.Unknown
    }
    return annotate(Schema.Literal(...(node.enum as Array<any>)) as any)
  }
  const types = node.type === undefined ? [] : Array.isArray(node.type) ? node.type : [node.type]
  const of = (type: unknown, i: number): Schema.Schema<any, any> => {
    const at = [...path, "type", ...(Array.isArray(node.type) ? [i] : [])]
    switch (type) {
      case "string": {
        let s: Schema.Schema<string, string> = Schema.String
        if (typeof node.minLength === "number") s = s.pipe(Schema.minLength(node.minLength))
        if (typeof node.maxLength === "number") s = s.pipe(Schema.maxLength(node.maxLength))
        return s
      }
      case "number":
      case "integer": {
        let s: Schema.Schema<number, number> = type === "integer" ? Schema.Int : Schema.Number
        if (typeof node.minimum === "number") s = s.pipe(Schema.greaterThanOrEqualTo(node.minimum))
        if (typeof node.maximum === "number") s = s.pipe(Schema.lessThanOrEqualTo(node.maximum))
        return s
      }
      case "boolean":
        return Schema.Boolean
      case "null":
        return Schema.Null
      case "array": {
        let s: Schema.Schema<ReadonlyArray<any>, ReadonlyArray<any>> = Schema.Array(node.items === undefined ? Schema.Unknown : convert(node.items, [...path, "items"], problems))
        if (typeof node.minItems === "number") s = s.pipe(Schema.minItems(node.minItems))
        if (typeof node.maxItems === "number") s = s.pipe(Schema.maxItems(node.maxItems))
        return s
      }
      case "object": {
        const properties = node.properties === undefined ? {} : node.properties
        if (!isObject(properties)) {
          problems.push({ path: [...path, "properties"], message: "expected a map of property schemas" })
          return Schema.Unknown
        }
        const required = node.required === undefined ? [] : node.required
        if (!Array.isArray(required) || required.some((r) => typeof r !== "string")) {
          problems.push({ path: [...path, "required"], message: "expected a list of property names" })
          return Schema.Unknown
        }
        for (const [i, name] of required.entries()) {
          if (!(name in properties)) problems.push({ path: [...path, "required", i], message: `\`${name}\` is required but not among the properties` })
        }
        const fields = Object.fromEntries(
          Object.entries(properties).map(([name, sub]) => {
            const field = convert(sub, [...path, "properties", name], problems)
            return [name, required.includes(name) ? field : Schema.optional(field)]
          })
        )
        const extra = node.additionalProperties
        if (extra === false) return Schema.Struct(fields)
        const rest = extra === undefined || extra === true ? Schema.Unknown : convert(extra, [...path, "additionalProperties"], problems)
        return Schema.Struct(fields, Schema.Record({ key: Schema.String, value: rest }))
      }
      default:
        problems.push({ path: at, message: `unknown type ${JSON.stringify(type)}; expected string, number, integer, boolean, null, array or object` })
        return Schema.Unknown
    }
  }
  if (types.length === 0) return annotate(Schema.Unknown)
  const members = types.map(of)
  return annotate(members.length === 1 ? members[0] : Schema.Union(...members))
}

/**
 * The Effect Schema of a JSON Schema, or the problems of the JSON Schema (each at its path).
 *
 * @example
 * fromJsonSchema({ type: "object", additionalProperties: false, properties: { url: { type: "string" } }, required: ["url"] })
 */
export const fromJsonSchema = (schema: unknown): Either.Either<Schema.Schema<any, any>, ReadonlyArray<SchemaProblem>> => {
  const problems: Array<SchemaProblem> = []
  const converted = convert(schema, [], problems)
  if (problems.length > 0) return Either.left(problems)
  if (!isObject(schema) || schema.type !== "object") return Either.left([{ path: ["type"], message: "a provider's parameters schema must be `type: object`" }])
  return Either.right(converted)
}
