// BlobStore implementations that ship in core. Append one export line per module.
export * as UnstorageBlobStore from "./UnstorageBlobStore.ts"
