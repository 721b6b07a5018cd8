// The HTTP server factory and the parts a custom build may use: route declarations, errors,
// the access service and the OpenAPI generator.
export { createServer, builtinRoutes, runOn } from "./createServer.ts"
export type { Server, ServerOptions, ServerServices } from "./createServer.ts"
export { Encoded, encoded, jsonRoute, rawRoute } from "./Route.ts"
export type { AnyRoute, JsonRoute, RawRoute, RouteAccess, RouteContext } from "./Route.ts"
export { mountRoutes, fromParseError } from "./Router.ts"
export { Access, authorizeProject, satisfiesProjectRole } from "./Access.ts"
export type { Principal } from "./Access.ts"
export { RunCache } from "./RunCache.ts"
export * as ApiErrors from "./ApiError.ts"
export { ApiError } from "./ApiError.ts"
export { openApiDocument } from "./OpenApi.ts"
