// Conformance suites that every implementation of a port runs (@dstack-ts/core/testing).
export {}
export * from "./Codec.ts"
export * from "./BlobStoreSuite.ts"
export * from "./StateStoreSuite.ts"
export * from "./SqlJsonSuite.ts"
export * from "./BackendSuite.ts"
export * from "./ProviderSuite.ts"
export * from "./TransportSuite.ts"
export * from "./ExecutorSuite.ts"
