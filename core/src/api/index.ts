// The HTTP API contract: request and response schemas shared by the server and the client.
export * as RunsApi from "./runs.ts"
