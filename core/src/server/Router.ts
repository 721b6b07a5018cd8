// Mounts declared routes on a Hono app: authentication, project access, body decoding with
// field-path errors, the Effect handler run on the server's runtime, and response encoding.
import { Cause, Context, Effect, Either, Exit, Option, ParseResult, Schema } from "effect"
import type { ManagedRuntime } from "effect"
import type { Context as HonoContext, Hono } from "hono"
import { Access, satisfiesProjectRole } from "./Access.ts"
import type { Principal } from "./Access.ts"
import { ApiError, badRequest, forbidden, serverError, unauthenticated } from "./ApiError.ts"
import { Encoded } from "./Route.ts"
import type { AnyRoute, RouteContext } from "./Route.ts"

/** Turns a schema decoding failure into a 400 whose details carry each field path. */
export const fromParseError = (error: ParseResult.ParseError, prefix: ReadonlyArray<string | number> = []): ApiError =>
  new ApiError({
    status: 400,
    detail: ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => ({
      msg: issue.message,
      code: "invalid_request" as const,
      loc: [...prefix, ...issue.path.map((p) => (typeof p === "symbol" ? String(p) : p))]
    }))
  })

const bearer = (c: HonoContext): string | undefined => {
  const header = c.req.header("authorization")
  if (!header) return undefined
  const match = /^Bearer\s+(.+)$/i.exec(header.trim())
  return match ? match[1].trim() : undefined
}

const parseJson = (text: string): Effect.Effect<unknown, ApiError> =>
  Effect.try({
    try: () => (text.trim() === "" ? {} : JSON.parse(text)),
    catch: (cause) => badRequest(`The request body is not valid JSON: ${(cause as Error).message}`)
  })

// The hot path of every request: plain combinators rather than generators, and nothing
// asynchronous once the body is read unless a store call is (a cached caller and a cached run
// answer in one synchronous pass of the fiber).
const authorize = (route: AnyRoute<any>, c: HonoContext): Effect.Effect<{ principal: Principal | undefined; projectName: string | undefined }, ApiError, Access> => {
  const projectName = c.req.param("project_name")
  if (route.access === "public") return Effect.succeed({ principal: undefined, projectName })
  const token = bearer(c)
  if (token === undefined) return Effect.fail(unauthenticated())
  const access = route.access
  return Effect.flatMap(Access, (service) =>
    Effect.flatMap(service.authenticate(token), (principal) => {
      if (principal === undefined) return Effect.fail(unauthenticated("Invalid token"))
      if (access === "admin" && principal.globalRole !== "admin") {
        return Effect.fail(forbidden("This action needs the global admin role"))
      }
      if (typeof access !== "object") return Effect.succeed({ principal, projectName })
      if (projectName === undefined) return Effect.die(new Error(`route ${route.path} has no :project_name`))
      return Effect.flatMap(service.projectRole(principal, projectName), (role) =>
        satisfiesProjectRole(principal, role, access.project)
          ? Effect.succeed({ principal, projectName })
          : Effect.fail(
              forbidden(
                role === undefined
                  ? `You are not a member of project ${projectName}`
                  : `This action needs the project role ${access.project} or higher; you are ${role} in ${projectName}`
              )
            )
      )
    })
  )
}

/**
 * A route with its request decoder and response encoder built once, at mount time. They are
 * the synchronous (`Either`) forms — an `Either` is an Effect too — which skip the machinery
 * of effectful parsing: the wire schemas have no asynchronous parts.
 */
interface Mounted<R> {
  readonly route: AnyRoute<R>
  /** The route has a `cached` answer to try first. */
  readonly cachedOk: boolean
  /**
   * For such a route, the inputs its latest request bodies decoded to (a client polling a run
   * sends the same body each time): decoded values are immutable, and decoding is most of the
   * work left on that path.
   */
  readonly inputs: Map<string, unknown> | undefined
  readonly decode: ((body: unknown) => Either.Either<unknown, ParseResult.ParseError>) | undefined
  readonly encode: ((value: unknown) => Either.Either<unknown, ParseResult.ParseError>) | undefined
}

const prepare = <R>(route: AnyRoute<R>): Mounted<R> =>
  route.kind === "raw"
    ? { route, cachedOk: false, inputs: undefined, decode: undefined, encode: undefined }
    : {
        route,
        cachedOk: route.cached !== undefined,
        inputs: route.cached !== undefined && route.request !== undefined ? new Map() : undefined,
        decode: route.request ? Schema.decodeUnknownEither(route.request, { errors: "all" }) : undefined,
        encode: Schema.encodeEither(route.response)
      }

/**
 * A JSON answer. Built as a plain Response with plain-object headers, not through Hono's
 * `c.json`: that keeps a `Headers` object, which the Node adapter must then walk and copy for
 * every answer. `extra` are the headers every answer of the API carries (CORS).
 */
const jsonResponse = (text: string | Uint8Array, status: number, extra: Readonly<Record<string, string>> | undefined): Response =>
  new Response(text as BodyInit, { status, headers: extra === undefined ? JSON_HEADERS : { ...extra, "content-type": "application/json" } })

const JSON_HEADERS: Readonly<Record<string, string>> = { "content-type": "application/json" }

/** Bodies longer than this are not remembered with their decoded input. */
const MAX_REMEMBERED_BODY = 1_024
/** Past this many remembered bodies a route's memory starts over. */
const MAX_REMEMBERED_INPUTS = 256

/** A request's input, when decoded already (by the memory path, which then gave way). */
type Decoded = { readonly input: unknown } | undefined

/** Runs a route for a request whose body (when the route takes one) was read already. */
const handle = <R>(
  { route, decode, encode }: Mounted<R>,
  c: HonoContext,
  body: string,
  extra: Readonly<Record<string, string>> | undefined,
  decoded: Decoded
): Effect.Effect<Response, ApiError, R | Access> =>
  Effect.flatMap(authorize(route, c), ({ principal, projectName }) => {
    const ctx: RouteContext = { principal, projectName, params: c.req.param() as Record<string, string>, hono: c }
    if (route.kind === "raw") return route.handler(ctx)
    const input: Effect.Effect<unknown, ApiError> = decoded !== undefined
      ? Effect.succeed(decoded.input)
      : decode
      ? Effect.flatMap(parseJson(body), (json) => Effect.mapError(decode(json), (e) => fromParseError(e, ["body"])))
      : Effect.void
    return input.pipe(
      Effect.flatMap((i) => route.handler(i, ctx)),
      Effect.flatMap((output) =>
        // Already in wire form (read as stored): encoding it again would only cost time.
        output instanceof Encoded
          ? Effect.succeed(jsonResponse(output.json ?? JSON.stringify(output.value), 200, extra))
          : encode!(output).pipe(
              Effect.map((wire) => jsonResponse(JSON.stringify(wire), 200, extra)),
              Effect.mapError((e) => serverError(`The server produced a response that does not match its schema`, e))
            )
      )
    )
  })

/**
 * The answer of a JSON route made without Effect, when everything it needs is in memory: the
 * caller (`Access.authenticateCached`), their project role, and the route's own `cached`
 * answer. Undefined whenever any step would need more — or would fail: errors are left to
 * `handle`, which says them the usual way — so this never answers differently from it.
 */
const answerCached = <R>(
  { route, decode, inputs }: Mounted<R>,
  c: HonoContext,
  body: string,
  services: Context.Context<R | Access>,
  extra: Readonly<Record<string, string>> | undefined,
  decodedInto: { decoded: Decoded }
): Response | undefined => {
  if (route.kind !== "json" || route.cached === undefined) return undefined
  const access = Context.get(services, Access)
  if (access.authenticateCached === undefined || access.projectRoleCached === undefined) return undefined
  const params = c.req.param() as Record<string, string>
  const projectName = params.project_name
  let principal: Principal | undefined
  if (route.access !== "public") {
    const token = bearer(c)
    if (token === undefined) return undefined
    principal = access.authenticateCached(token)
    if (principal === undefined) return undefined
    if (route.access === "admin" && principal.globalRole !== "admin") return undefined
    if (typeof route.access === "object") {
      if (projectName === undefined) return undefined
      const role = access.projectRoleCached(principal, projectName)
      if (role === undefined || !satisfiesProjectRole(principal, role.role, route.access.project)) return undefined
    }
  }
  let input: unknown = undefined
  if (decode !== undefined) {
    input = inputs?.get(body)
    if (input !== undefined) decodedInto.decoded = { input }
    else {
      let json: unknown
      try {
        json = body.trim() === "" ? {} : JSON.parse(body)
      } catch {
        return undefined
      }
      const decoded = decode(json)
      if (Either.isLeft(decoded)) return undefined
      input = decoded.right
      decodedInto.decoded = { input }
      if (inputs !== undefined && body.length <= MAX_REMEMBERED_BODY) {
        if (inputs.size >= MAX_REMEMBERED_INPUTS) inputs.clear()
        inputs.set(body, input)
      }
    }
  }
  const ctx: RouteContext = { principal, projectName, params, hono: c }
  const output = route.cached(input, ctx, services as Context.Context<R>)
  return output === undefined ? undefined : jsonResponse(output.json ?? JSON.stringify(output.value), 200, extra)
}

export const errorResponse = (c: HonoContext, error: ApiError, extra?: Readonly<Record<string, string>>): Response =>
  extra === undefined ? c.json({ detail: error.detail }, error.status) : jsonResponse(JSON.stringify({ detail: error.detail }), error.status, extra)

export interface MountOptions {
  /**
   * Headers every answer to this request carries (the server's CORS headers), or undefined for
   * none. JSON routes put them in the answer they build; raw routes' answers made with the Hono
   * context (`c.json`, `c.body` …) get them as prepared headers.
   */
  readonly headers?: ((c: HonoContext) => Readonly<Record<string, string>> | undefined) | undefined
}

/** Mounts every route on `app`, running handlers on `runtime`. */
export const mountRoutes = <R>(
  app: Hono,
  routes: ReadonlyArray<AnyRoute<R>>,
  runtime: ManagedRuntime.ManagedRuntime<R | Access, never>,
  options: MountOptions = {}
): void => {
  const headersOf = options.headers
  // The runtime's services, once it is built: what `answerCached` reads from.
  let services: Context.Context<R | Access> | undefined
  let servicesAsked = false
  const askServices = () => {
    servicesAsked = true
    runtime.runtime().then(
      (rt) => {
        services = rt.context
      },
      () => {
        servicesAsked = false
      }
    )
  }
  for (const route of routes) {
    const mounted = prepare(route)
    const isJson = route.kind === "json"
    const run = async (c: HonoContext, body: string, extra: Readonly<Record<string, string>> | undefined, decoded: Decoded): Promise<Response> => {
      const exit = await runtime.runPromiseExit(handle(mounted, c, body, extra, decoded))
      if (Exit.isSuccess(exit)) return exit.value
      const reply = (error: ApiError) => errorResponse(c, error, isJson ? extra : undefined)
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) {
        const error = failure.value
        if (error.status >= 500) console.error(`[server] ${route.method} ${route.path}: ${error.message}`, error.cause ?? "")
        return reply(error)
      }
      if (Cause.isInterruptedOnly(exit.cause)) return reply(serverError("The request was interrupted"))
      console.error(`[server] ${route.method} ${route.path} failed:\n${Cause.pretty(exit.cause)}`)
      return reply(serverError("Internal server error"))
    }
    const respond = (c: HonoContext, body: string, extra: Readonly<Record<string, string>> | undefined): Response | Promise<Response> => {
      if (mounted.cachedOk) {
        if (services === undefined) {
          if (!servicesAsked) askServices()
        } else {
          const into: { decoded: Decoded } = { decoded: undefined }
          const answer = answerCached(mounted, c, body, services, extra, into)
          if (answer !== undefined) return answer
          // Not from memory: the handler runs, with the input decoded already (if it was).
          return run(c, body, extra, into.decoded)
        }
      }
      return run(c, body, extra, undefined)
    }
    // Each route is its own Hono handler with no middleware in front, so Hono calls it directly
    // (a matched middleware would make Hono compose a chain for every request).
    app.on(route.method, route.path, (c) => {
      const extra = headersOf?.(c)
      if (!isJson && extra !== undefined) for (const name in extra) c.header(name, extra[name])
      // The body is read before the handler runs, so that (with what it needs cached) it runs in one go.
      if (mounted.decode === undefined) return respond(c, "", extra)
      return c.req.text().then(
        (body) => respond(c, body, extra),
        (cause) => errorResponse(c, badRequest(`The request body could not be read: ${(cause as Error).message}`), isJson ? extra : undefined)
      )
    })
  }
}
