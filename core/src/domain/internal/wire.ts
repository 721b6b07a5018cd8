/**
 * Field helpers for entities whose TypeScript keys are camelCase and whose wire keys are the
 * upstream snake_case. Internal to the domain module; not exported from the package.
 */
import { Schema } from "effect"

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
