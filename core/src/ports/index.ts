// Public exports of core/src/ports. Append one export line per module.
export {}
export * as Codec from "./Codec.ts"
export * as BlobStore from "./BlobStore.ts"
export * as StateStore from "./StateStore.ts"
export * as Backend from "./Backend.ts"
export * as RunnerTransport from "./RunnerTransport.ts"
export * as Repo from "./Repo.ts"
export * as Provider from "./Provider.ts"
export * as Executor from "./Executor.ts"
