/**
 * @dstack-ts/core — the contracts and the machinery every build needs: domain schemas, ports,
 * the plugin host, the engine, the runner agent, the HTTP server factory, configuration loading
 * (conformance suites: `@dstack-ts/core/testing`; the browser-safe part a client needs:
 * `@dstack-ts/core/wire`). Implementations of the ports are plugins; the SDK is
 * `@dstack-ts/client`.
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
// The shared SQL state store and its driver contract (the state-embedded and state-postgres
// plugins run it over their drivers).
export * from "./state/index.ts"
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
// Workflows (`.dstack/workflows.yaml`, variables, providers.yaml): parsing, planning the DAG,
// and `defineProvider` for TypeScript providers.
export * as Workflows from "./workflows/index.ts"
export { defineProvider } from "./workflows/defineProvider.ts"
export type { ProviderDefinition, ProviderJobInput, ProviderWorkflow } from "./workflows/defineProvider.ts"
