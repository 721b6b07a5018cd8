/**
 * The OpenAI-compatible endpoint of a project: `/proxy/models/{project}/v1/…`. `GET
 * /v1/models` lists the models the project's services serve (`model:` in their
 * configurations); any other request carries a JSON body whose `model` field picks the service,
 * and goes to that service's API under its model `prefix` (`/v1` by default) through the
 * services proxy, streamed answers included. Callers need a token of a project member.
 */
import { Effect, Runtime } from "effect"
import { excerpt, noRoute, badRequest, serverError, payloadTooLarge } from "../server/ApiError.ts"
import { errorJson, type ServiceProxy } from "./ServiceProxy.ts"
import type { ServiceRegistryService } from "./ServiceRegistry.ts"

const PREFIX = "/proxy/models/"
/** The largest request body the router reads to find its `model`. */
const MAX_BODY_BYTES = 16 * 1024 * 1024

export interface ModelRouter {
  /** `peer`: the connection's peer address, for the replica's `X-Real-IP` and `X-Forwarded-For`. */
  readonly handle: (request: Request, peer?: string) => Promise<Response>
}

/** An error in the shape OpenAI clients read (`{error: {message, type}}`). */
const openAiError = (status: number, message: string, type = "invalid_request_error"): Response =>
  new Response(JSON.stringify({ error: { message, type, code: null, param: null } }), { status, headers: { "content-type": "application/json" } })

export const makeModelRouter = (registry: ServiceRegistryService, proxy: ServiceProxy, runtime: Runtime.Runtime<never>): ModelRouter => {
  const run = Runtime.runPromise(runtime)
  const modelsOf = (project: string) =>
    run(registry.models(project).pipe(Effect.either))

  const handle = async (request: Request, peer?: string): Promise<Response> => {
    const url = new URL(request.url)
    const rest = url.pathname.slice(PREFIX.length)
    const slash = rest.indexOf("/")
    if (slash <= 0) return errorJson(noRoute(`No model endpoint at ${excerpt(url.pathname, 200)}`))
    const project = decodeURIComponent(rest.slice(0, slash))
    const path = rest.slice(slash)
    if (!path.startsWith("/v1/")) return errorJson(noRoute(`No model endpoint at ${excerpt(url.pathname, 200)}: the API is under /proxy/models/${excerpt(project)}/v1/`))
    const refused = await proxy.authorizeMember(project, request.headers.get("authorization"))
    if (refused !== undefined) return refused
    const models = await modelsOf(project)
    if (models._tag === "Left") return errorJson(serverError(`cannot read the models of project ${excerpt(project)}: ${models.left.message ?? models.left.reason}`))
    if (request.method === "GET" && path === "/v1/models") {
      const data = [...models.right.keys()].sort().map((id) => ({ id, object: "model", created: 0, owned_by: project }))
      return new Response(JSON.stringify({ object: "list", data }), { headers: { "content-type": "application/json" } })
    }
    const declared = Number(request.headers.get("content-length") ?? "0")
    if (declared > MAX_BODY_BYTES) return errorJson(payloadTooLarge(`The request body is larger than ${MAX_BODY_BYTES} bytes`))
    const bytes = new Uint8Array(await request.arrayBuffer())
    if (bytes.length > MAX_BODY_BYTES) return errorJson(payloadTooLarge(`The request body is larger than ${MAX_BODY_BYTES} bytes`))
    let model: unknown
    try {
      model = (JSON.parse(new TextDecoder().decode(bytes)) as { model?: unknown }).model
    } catch {
      return errorJson(badRequest("The request body is not JSON with a `model` field"))
    }
    if (typeof model !== "string") return openAiError(400, "The request names no `model`")
    const runName = models.right.get(model)
    if (runName === undefined) {
      return openAiError(404, `The model ${excerpt(model)} does not exist in project ${excerpt(project)}; it has ${[...models.right.keys()].sort().join(", ") || "none"}`, "not_found_error")
    }
    const entry = await proxy.lookup(project, runName)
    if (entry instanceof Response) return entry
    const prefix = (entry.configuration.model?.prefix ?? "/v1").replace(/\/$/, "")
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        controller.enqueue(bytes)
        controller.close()
      }
    })
    return proxy.forward(entry, request, `${prefix}${path.slice("/v1".length)}${url.search}`, { dropAuthorization: true, body, caller: proxy.callerOf(peer, request.headers.get("x-forwarded-for")) })
  }
  return { handle }
}
