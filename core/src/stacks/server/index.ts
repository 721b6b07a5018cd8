// The server side of stacks: the /api/stacks routes, the viewer pages and the name rules.
export * as StackName from "./StackName.ts"
export { stackRoutes } from "./StackRoutes.ts"
export { viewerRoutes } from "./Viewer.ts"
