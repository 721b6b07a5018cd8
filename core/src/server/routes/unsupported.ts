// The answer to a run spec whose configuration has keys this build does not carry out yet
// (config/Unsupported.ts): 400 with one detail per key, located where the request holds it.
import { Effect } from "effect"
import { unsupportedKeys } from "../../config/Unsupported.ts"
import type { RunSpec } from "../../domain/Run.ts"
import { ApiError } from "../ApiError.ts"

/** Fails with every unsupported key of the run spec's configuration; `loc` is where the spec sits. */
export const refuseUnsupported = (runSpec: RunSpec, loc: ReadonlyArray<string>): Effect.Effect<void, ApiError> => {
  const keys = unsupportedKeys(runSpec.configuration)
  return keys.length === 0
    ? Effect.void
    : Effect.fail(new ApiError({ status: 400, detail: keys.map((k) => ({ msg: k.message, code: "invalid_request" as const, loc: [...loc, "configuration", ...k.path] })) }))
}
