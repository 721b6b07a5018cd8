// Public exports of core/src/stacks: choosing and running codecs for stack payloads.
export * as AutoHandler from "./AutoHandler.ts"
export * as BuiltinCodecs from "./BuiltinCodecs.ts"
export * as StackContentTypes from "./ContentTypes.ts"
export * as StackServer from "./server/index.ts"
export * as StackViewers from "./StackViewer.ts"
export type { StackViewer, ViewerAsset } from "./StackViewer.ts"
