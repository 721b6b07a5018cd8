// Public exports of core/src/ports. Append one export line per module.
export {}
export * as Codec from "./Codec.ts"
export * as BlobStore from "./BlobStore.ts"
export * as StateStore from "./StateStore.ts"
