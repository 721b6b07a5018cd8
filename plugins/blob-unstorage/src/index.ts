/**
 * @dstack-ts/blob-unstorage — BlobStores on unstorage drivers: `fs` (the embedded default),
 * `memory` and `redis` (shared by several server replicas). The default export is the plugin;
 * `UnstorageBlobStore` holds the layers for a custom build or any other unstorage driver.
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as UnstorageBlobStore from "./UnstorageBlobStore.ts"

export { UnstorageBlobStore }

/** The plugin: contributes the blob stores `fs`, `memory` and `redis`. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "BlobStores on unstorage drivers: fs, memory, redis",
  blobStores: {
    fs: UnstorageBlobStore.fsFromOptions,
    memory: UnstorageBlobStore.memoryFromOptions,
    redis: UnstorageBlobStore.redisFromOptions
  }
})

export default plugin
