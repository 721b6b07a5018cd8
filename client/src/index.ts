/**
 * @dstack-ts/client in a browser (the `browser` export condition; also `@dstack-ts/client/browser`):
 * the Promise client, its Effect API (`DstackApi`), runs, logs and stacks, over `fetch` only.
 * Node.js and Deno get `node.ts`, the same plus reading `~/.dstack/config.yml` and `attach`.
 */
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
export * as Secrets from "./Secrets.ts"
export * as Services from "./Services.ts"
export * as Workflows from "./Workflows.ts"
