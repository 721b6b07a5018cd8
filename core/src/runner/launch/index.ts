// Launching a runner build, for backends (`RunnerLaunch` in @dstack-ts/core): which build the
// server runs (RunnerProgram), bundling it into one file (bundleRunner), the command for this
// runtime (RunnerCommand), a started runner process read up to its ready line (startRunner),
// and the sh start of a bundle on the machine that runs it, from a startup snapshot made there
// (RunnerSnapshot).
export { RunnerProgram, layer as runnerProgramLayer, entry as runnerEntry, runnerArgs } from "./RunnerProgram.ts"
export type { RunnerProgramConfig } from "./RunnerProgram.ts"
export { bundleRunner, KEEP_OUTSIDE } from "./RunnerBundle.ts"
export type { BundleOptions, RunnerBundle } from "./RunnerBundle.ts"
export * as RunnerCommand from "./RunnerCommand.ts"
export type { Command } from "./RunnerCommand.ts"
export { parseAddress, StartFailure, startRunner } from "./RunnerProcess.ts"
export type { Exit, RunnerProcess, StartFailureKind, StartingRunner } from "./RunnerProcess.ts"
export { RUNNER_START_FUNCTION, runnerStartScript } from "./RunnerSnapshot.ts"
