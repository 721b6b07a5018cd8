// Public exports of core/src/client: the Promise client, its Effect API and the client config.
// Browser-safe: ConfigFile.ts (node: file access) is exported from the core barrel instead.
export { Client } from "./Client.ts"
export type { FromConfigOptions, ListRunsOptions, SubmitOptions } from "./Client.ts"
export { ClientConfigError, ClientError, ClientErrorReason, ClientConfigErrorReason, reasonOfStatus } from "./ClientError.ts"
export * from "./ClientConfig.ts"
export * as DstackApi from "./DstackApi.ts"
export type { ListRunsQuery, PollLogsQuery, StreamLogsQuery } from "./DstackApi.ts"
export { Run, runDataOf } from "./Run.ts"
export { serverSentEvents } from "./RunLogs.ts"
export type { RunData, RunLogsOptions, RunOperations } from "./Run.ts"
export * as Wire from "./Wire.ts"
export * as Stacks from "./Stacks.ts"
