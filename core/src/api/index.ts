// The HTTP API contract: request and response schemas shared by the server and the client.
export * as RunsApi from "./runs.ts"
// A service's replicas and traffic as the proxy sees them.
export * as ServicesApi from "./services.ts"
// The binary log frame format (16-byte header + payload) of the logs stream and stored logs.
export * as LogFrames from "./logFrames.ts"
// The 16-byte record header shared by the runner event log, stored log files and log frames.
export * as RecordHeader from "./RecordHeader.ts"
// Workflow plans: the files, workflow and variables sent; the jobs (task configurations) answered.
export * as WorkflowsApi from "./workflows.ts"
// The fleets routes.
export * as FleetsApi from "./fleets.ts"
