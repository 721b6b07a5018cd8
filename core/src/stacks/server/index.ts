// The server side of stacks: the /api/stacks routes, the viewer pages and the name rules.
export * as StackName from "./StackName.ts"
export { stackRoutes } from "./StackRoutes.ts"
export { viewerRoutes } from "./Viewer.ts"
export { DEFAULT_STACK_UPLOAD_LIMIT, layerStackUploadLimit, StackUploadLimit } from "./UploadBody.ts"
export { DEFAULT_PENDING_FRAME_MAX_AGE_MS, layerPendingFrameMaxAge, PendingFrameMaxAge, sweepPendingFrames } from "./PendingFrames.ts"
