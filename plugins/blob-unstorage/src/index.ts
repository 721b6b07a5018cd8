/**
 * @dstack-ts/blob-unstorage — BlobStores on unstorage drivers: `fs` (the embedded default),
 * `memory`, and `redis` and `s3` (shared by several server replicas). The default export is the plugin;
 * `UnstorageBlobStore` holds the layers for a custom build or any other unstorage driver.
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as UnstorageBlobStore from "./UnstorageBlobStore.ts"

export { UnstorageBlobStore }
export { S3RequestError, s3Driver } from "./S3Driver.ts"
export type { S3DriverOptions } from "./S3Driver.ts"

/** The plugin: contributes the blob stores `fs`, `memory`, `redis` and `s3`. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "BlobStores on unstorage drivers: fs, memory, redis, s3",
  blobStores: {
    fs: UnstorageBlobStore.fsFromOptions,
    memory: UnstorageBlobStore.memoryFromOptions,
    redis: UnstorageBlobStore.redisFromOptions,
    s3: UnstorageBlobStore.s3FromOptions
  }
})

export default plugin
