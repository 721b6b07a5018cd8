// Public exports of core/src/workflows: workflow files, planning, provider programs and `defineProvider`.
export * from "./WorkflowFiles.ts"
export * from "./WorkflowPlan.ts"
export * from "./defineProvider.ts"
export * as Artifacts from "./Artifacts.ts"
export { artifactPathProblem } from "../runner/Artifacts.ts"
export { programOutputJobs, resolvePrograms } from "./ProviderPrograms.ts"
export { fromJsonSchema } from "./JsonSchemaParams.ts"
