// Public exports of core/src/ports. Append one export line per module.
export {}
export * as Codec from "./Codec.ts"
