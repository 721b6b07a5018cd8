/**
 * @dstack-ts/core — the public surface of the core package.
 */
export const CORE_VERSION = "0.1.0"
