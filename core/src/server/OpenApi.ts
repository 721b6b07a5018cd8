// Generates the OpenAPI 3.1 document from the declared routes' schemas, so the document can
// never drift from what the server accepts and returns.
import { JSONSchema } from "effect"
import type { AnyRoute } from "./Route.ts"
import { ApiErrorBody } from "./ApiError.ts"

export interface OpenApiInfo {
  readonly title: string
  readonly version: string
  readonly description?: string
}

const errorResponses = (ref: (s: any) => unknown) => ({
  "400": { description: "Refused (upstream's ServerClientError): code `error`, `resource_not_exists` for a missing resource or `resource_exists`; field paths in `fields`", content: { "application/json": { schema: ref(ApiErrorBody) } } },
  "403": { description: "A missing or invalid token (`not_authenticated`), or a role too low (`forbidden`)", content: { "application/json": { schema: ref(ApiErrorBody) } } },
  "404": { description: "No such route", content: { "application/json": { schema: ref(ApiErrorBody) } } },
  "422": { description: "Malformed request: each detail names the field path in `loc`", content: { "application/json": { schema: ref(ApiErrorBody) } } }
})

/** Builds the OpenAPI document for `routes`. */
export const openApiDocument = (routes: ReadonlyArray<AnyRoute<any>>, info: OpenApiInfo): Record<string, unknown> => {
  const definitions: Record<string, any> = {}
  const ref = (schema: { ast: any }) =>
    JSONSchema.fromAST(schema.ast, { definitions, definitionPath: "#/components/schemas/", target: "openApi3.1" })
  const paths: Record<string, Record<string, unknown>> = {}
  for (const route of routes) {
    const openApiPath = route.path.replace(/:([A-Za-z_]+)/g, "{$1}")
    const parameters = [...route.path.matchAll(/:([A-Za-z_]+)/g)].map((m) => ({
      name: m[1],
      in: "path",
      required: true,
      schema: { type: "string" }
    }))
    const operation: Record<string, unknown> = {
      summary: route.summary,
      tags: [route.tag],
      operationId: `${route.tag}.${route.path.split("/").pop()}`,
      parameters,
      security: route.access === "public" ? [] : [{ bearerAuth: [] }],
      responses:
        route.kind === "json"
          ? { "200": { description: "OK", content: { "application/json": { schema: ref(route.response) } } }, ...errorResponses(ref) }
          : { "200": { description: route.responseDescription ?? "OK" }, ...errorResponses(ref) }
    }
    if (route.kind === "json" && route.request) {
      operation.requestBody = { required: true, content: { "application/json": { schema: ref(route.request) } } }
    } else if (route.kind === "raw" && route.requestDescription) {
      operation.requestBody = { description: route.requestDescription }
    }
    paths[openApiPath] = { ...paths[openApiPath], [route.method.toLowerCase()]: operation }
  }
  return {
    openapi: "3.1.0",
    info,
    paths,
    components: {
      schemas: definitions,
      securitySchemes: { bearerAuth: { type: "http", scheme: "bearer" } }
    }
  }
}
