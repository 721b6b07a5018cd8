// Mounts declared routes on a Hono app: authentication, project access, body decoding with
// field-path errors, the Effect handler run on the server's runtime, and response encoding.
import { Cause, Effect, Either, Exit, Option, ParseResult, Schema } from "effect"
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
  readonly decode: ((body: unknown) => Either.Either<unknown, ParseResult.ParseError>) | undefined
  readonly encode: ((value: unknown) => Either.Either<unknown, ParseResult.ParseError>) | undefined
}

const prepare = <R>(route: AnyRoute<R>): Mounted<R> =>
  route.kind === "raw"
    ? { route, decode: undefined, encode: undefined }
    : {
        route,
        decode: route.request ? Schema.decodeUnknownEither(route.request, { errors: "all" }) : undefined,
        encode: Schema.encodeEither(route.response)
      }

/** Runs a route for a request whose body (when the route takes one) was read already. */
const handle = <R>({ route, decode, encode }: Mounted<R>, c: HonoContext, body: string): Effect.Effect<Response, ApiError, R | Access> =>
  Effect.flatMap(authorize(route, c), ({ principal, projectName }) => {
    const ctx: RouteContext = { principal, projectName, params: c.req.param() as Record<string, string>, hono: c }
    if (route.kind === "raw") return route.handler(ctx)
    const input: Effect.Effect<unknown, ApiError> = decode
      ? Effect.flatMap(parseJson(body), (json) => Effect.mapError(decode(json), (e) => fromParseError(e, ["body"])))
      : Effect.void
    return input.pipe(
      Effect.flatMap((i) => route.handler(i, ctx)),
      Effect.flatMap((output) =>
        // Already in wire form (read as stored): encoding it again would only cost time.
        output instanceof Encoded
          ? Effect.succeed(c.json(output.value as any, 200))
          : encode!(output).pipe(
              Effect.map((wire) => c.json(wire as any, 200)),
              Effect.mapError((e) => serverError(`The server produced a response that does not match its schema`, e))
            )
      )
    )
  })

export const errorResponse = (c: HonoContext, error: ApiError): Response =>
  c.json({ detail: error.detail }, error.status)

/** Mounts every route on `app`, running handlers on `runtime`. */
export const mountRoutes = <R>(
  app: Hono,
  routes: ReadonlyArray<AnyRoute<R>>,
  runtime: ManagedRuntime.ManagedRuntime<R | Access, never>
): void => {
  for (const route of routes) {
    const mounted = prepare(route)
    app.on(route.method, route.path, async (c) => {
      // Read before the handler runs, so that (with what it needs cached) it runs in one go.
      let body = ""
      if (mounted.decode !== undefined) {
        try {
          body = await c.req.text()
        } catch (cause) {
          return errorResponse(c, badRequest(`The request body could not be read: ${(cause as Error).message}`))
        }
      }
      const exit = await runtime.runPromiseExit(handle(mounted, c, body))
      if (Exit.isSuccess(exit)) return exit.value
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) {
        const error = failure.value
        if (error.status >= 500) console.error(`[server] ${route.method} ${route.path}: ${error.message}`, error.cause ?? "")
        return errorResponse(c, error)
      }
      if (Cause.isInterruptedOnly(exit.cause)) return errorResponse(c, serverError("The request was interrupted"))
      console.error(`[server] ${route.method} ${route.path} failed:\n${Cause.pretty(exit.cause)}`)
      return errorResponse(c, serverError("Internal server error"))
    })
  }
}
