// How the router decodes a JSON request body: by the route's schema, every problem reported,
// and `null` on an optional key read as the key's absence — the upstream Python client sends
// each unset optional field as `null` (domain/internal/nullAsAbsent.ts). Unknown keys are
// ignored, as upstream's server ignores them.
import { Schema } from "effect"
import { nullAsAbsent } from "../domain/internal/nullAsAbsent.ts"

/** The decoder of a route's request body, built once when the route is mounted. */
export const decodeRequest = <A, I>(schema: Schema.Schema<A, I, never>) =>
  Schema.decodeUnknownEither(nullAsAbsent(schema), { errors: "all" })
