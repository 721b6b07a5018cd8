// Public exports of core/src/config. Append one export line per module.
export {}
export * from "./ConfigurationError.ts"
export * from "./Load.ts"
export { didYouMean, editDistance } from "./DidYouMean.ts"
export * from "./Unsupported.ts"
