// Public exports of core/src/runner: the runner agent and its HTTP API, the runner program
// (`runnerMain`, for runner builds) and, under `RunnerLaunch`, how a backend starts one.
// Executors are plugins (see the Executor port).
export * from "./RunnerProtocol.ts"
export * from "./JobEventLog.ts"
export * as RunnerAgent from "./RunnerAgent.ts"
export { makeRunnerApp, RUNNER_VERSION } from "./RunnerApp.ts"
export * from "./serveRunner.ts"
export { runnerContributions } from "./RunnerPlugins.ts"
export type { RunnerContributions } from "./RunnerPlugins.ts"
export { parseRunnerArgs, readyLine, runnerMain, RUNNER_USAGE, startRunnerProgram } from "./RunnerMain.ts"
export type { RunnerArgs, RunnerProgramOptions } from "./RunnerMain.ts"
export * as RunnerLaunch from "./launch/index.ts"
export * as HostProbe from "./HostProbe.ts"
export type { FetchHandler, ListeningServer, ServeFunction } from "./adapter/types.ts"
