// Mounts declared routes on a Hono app: authentication, project access, body decoding with
// field-path errors, the Effect handler run on the server's runtime, and response encoding.
import { Cause, Effect, Exit, Option, ParseResult, Schema } from "effect"
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

const readJson = (c: HonoContext): Effect.Effect<unknown, ApiError> =>
  Effect.tryPromise({
    try: async () => {
      const text = await c.req.text()
      return text.trim() === "" ? {} : JSON.parse(text)
    },
    catch: (cause) => badRequest(`The request body is not valid JSON: ${(cause as Error).message}`)
  })

const authorize = (route: AnyRoute<any>, c: HonoContext) =>
  Effect.gen(function* () {
    const projectName = c.req.param("project_name")
    if (route.access === "public") {
      return { principal: undefined as Principal | undefined, projectName }
    }
    const token = bearer(c)
    if (token === undefined) return yield* Effect.fail(unauthenticated())
    const access = yield* Access
    const principal = yield* access.authenticate(token)
    if (principal === undefined) return yield* Effect.fail(unauthenticated("Invalid token"))
    if (route.access === "admin" && principal.globalRole !== "admin") {
      return yield* Effect.fail(forbidden("This action needs the global admin role"))
    }
    if (typeof route.access === "object") {
      if (projectName === undefined) return yield* Effect.die(new Error(`route ${route.path} has no :project_name`))
      const role = yield* access.projectRole(principal, projectName)
      if (!satisfiesProjectRole(principal, role, route.access.project)) {
        return yield* Effect.fail(
          forbidden(
            role === undefined
              ? `You are not a member of project ${projectName}`
              : `This action needs the project role ${route.access.project} or higher; you are ${role} in ${projectName}`
          )
        )
      }
    }
    return { principal, projectName }
  })

/** A route with its request decoder and response encoder built once, at mount time. */
interface Mounted<R> {
  readonly route: AnyRoute<R>
  readonly decode: ((body: unknown) => Effect.Effect<unknown, ParseResult.ParseError>) | undefined
  readonly encode: ((value: unknown) => Effect.Effect<unknown, ParseResult.ParseError>) | undefined
}

const prepare = <R>(route: AnyRoute<R>): Mounted<R> =>
  route.kind === "raw"
    ? { route, decode: undefined, encode: undefined }
    : {
        route,
        decode: route.request ? Schema.decodeUnknown(route.request, { errors: "all" }) : undefined,
        encode: Schema.encode(route.response)
      }

const handle = <R>({ route, decode, encode }: Mounted<R>, c: HonoContext): Effect.Effect<Response, ApiError, R | Access> =>
  Effect.gen(function* () {
    const { principal, projectName } = yield* authorize(route, c)
    const ctx: RouteContext = { principal, projectName, params: c.req.param() as Record<string, string>, hono: c }
    if (route.kind === "raw") return yield* route.handler(ctx)
    let input: unknown = undefined
    if (decode) {
      const body = yield* readJson(c)
      input = yield* decode(body).pipe(Effect.mapError((e) => fromParseError(e, ["body"])))
    }
    const output = yield* route.handler(input, ctx)
    // Already in wire form (read as stored): encoding it again would only cost time.
    if (output instanceof Encoded) return c.json(output.value as any, 200)
    const wire = yield* encode!(output).pipe(
      Effect.mapError((e) => serverError(`The server produced a response that does not match its schema`, e))
    )
    return c.json(wire as any, 200)
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
      const exit = await runtime.runPromiseExit(handle(mounted, c))
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
