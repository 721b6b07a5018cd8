/**
 * Field helpers for entities whose TypeScript keys are camelCase and whose wire keys are the
 * upstream snake_case. Internal to the domain module; not exported from the package.
 */
import { Option, Schema } from "effect"

/** A required field read from and written to `key` on the wire. */
export const wire = <S extends Schema.Schema.Any, const K extends string>(schema: S, key: K) =>
  Schema.propertySignature(schema).pipe(Schema.fromKey(key))

/** An optional field: missing or `null` on the wire both decode to `undefined`. */
export const wireOptional = <S extends Schema.Schema.Any, const K extends string>(schema: S, key: K) =>
  Schema.optionalWith(schema, { nullable: true }).pipe(Schema.fromKey(key))

/** A field with a default when it is missing or `null` on the wire. */
export const wireDefault = <S extends Schema.Schema.Any, const K extends string>(
  schema: S,
  key: K,
  value: () => Schema.Schema.Type<S>
) => Schema.optionalWith(schema, { nullable: true, default: value }).pipe(Schema.fromKey(key))

/**
 * An optional string that is always written (`""` when absent), for fields upstream's models
 * require: read back, `""`, `null` or a missing key are all absent.
 */
export const wireStringOrEmpty = <const K extends string>(key: K) =>
  Schema.optionalToOptional(Schema.NullOr(Schema.String), Schema.UndefinedOr(Schema.String), {
    decode: (o) => Option.filter(o, (s): s is string => s !== null && s !== ""),
    encode: (o) => Option.some(Option.getOrUndefined(o) ?? "")
  }).pipe(Schema.fromKey(key))
