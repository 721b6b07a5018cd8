// The version of @dstack-ts/core that this copy of the source is, read from its package.json so
// that the plugin host checks plugins' `core` ranges against the version actually published.
import pkg from "../../package.json" with { type: "json" }

/** The version of `@dstack-ts/core` this host runs, e.g. `"0.1.0"`. */
export const CORE_VERSION: string = pkg.version
