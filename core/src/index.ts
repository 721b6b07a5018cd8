/**
 * @dstack-ts/core — domain schemas, ports, plugin contract and (as they land) the engine,
 * runner agent, HTTP server factory and typed client.
 *
 * Domain data is exported flat (`TaskConfiguration`, `RunStatus` …); each port is exported as
 * a namespace in the Effect style (`BlobStore.BlobStore` is the tag, `BlobStore.layerMemory` a
 * layer).
 */
// Read from core/package.json, so the plugin host checks ranges against the published version.
export { CORE_VERSION } from "./plugin/CoreVersion.ts"

export * from "./domain/index.ts"
export * from "./config/index.ts"
export * from "./plugin/index.ts"
export * from "./ports/index.ts"
export * from "./stacks/index.ts"
// The client SDK: `Client` (Promise), `ClientError`; everything else under `DstackClient`
// (its Effect API, config resolution) and `ClientConfigFile` (reads ~/.dstack/config.yml).
export { Client, ClientError, ClientConfigError } from "./client/index.ts"
export * as DstackClient from "./client/index.ts"
export * as ClientConfigFile from "./client/ConfigFile.ts"
// StateStore implementations that ship in core (embedded PGlite, the shared SQL store).
export * from "./state/index.ts"
// BlobStore implementations that ship in core (unstorage: memory, fs, any driver).
export * from "./blob/index.ts"
export * from "./engine/index.ts"
// The runner agent (`Runner.serveRunner`), its HTTP API, the runner program for runner builds
// (`Runner.runnerMain`); `RunnerLaunch`: how a backend bundles, starts and stops a runner build.
export * as Runner from "./runner/index.ts"
export * as RunnerLaunch from "./runner/launch/index.ts"
export * from "./api/index.ts"
// Code delivery: LocalRepo / RemoteRepo / VirtualRepo on the client, materializeRepo on the runner.
export { LocalRepo, RemoteRepo, VirtualRepo, materializeRepo, builtinRepos } from "./repos/index.ts"
export type { RepoCode } from "./repos/index.ts"
// The HTTP server factory (`createServer`) and route building blocks for custom builds.
export * from "./server/index.ts"
