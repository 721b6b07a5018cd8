/**
 * @dstack-ts/core/wire — the part of core a client needs, and nothing that needs Node.js or the
 * server: the domain schemas, the HTTP API contract (request/response schemas, the binary log
 * frame format), the Codec port with its choice of codecs, and stack names. `@dstack-ts/client`
 * imports only this, so the SDK bundles for a browser.
 */
export * from "./domain/index.ts"
export * from "./api/index.ts"
export * as Codec from "./ports/Codec.ts"
export * as AutoHandler from "./stacks/AutoHandler.ts"
export { formatStackPath, isStackAccess, resolveStackPath } from "./stacks/server/StackName.ts"
export type { StackAccess, StackPath } from "./stacks/server/StackName.ts"
export type { CodeBlobKind, RepoCode } from "./repos/RepoCode.ts"
export { FrameAssembler } from "./internal/FrameAssembler.ts"
export { collectBytes, concatBytes } from "./internal/bytes.ts"
