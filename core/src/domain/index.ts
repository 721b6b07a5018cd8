// Public exports of core/src/domain. Append one export line per module.
export {}
export * from "./Status.ts"
export * from "./Offer.ts"
export * from "./Job.ts"
