// Mounts declared routes on a Hono app: authentication, project access, body reading (within
// a size limit) and decoding with field-path errors, the route's one Effect handler run on the
// server's runtime, and response encoding.
import { Cause, Context, Effect, Either, Exit, Option, ParseResult, Runtime, Schema } from "effect"
import type { ManagedRuntime } from "effect"
import type { Context as HonoContext, Hono } from "hono"
import { bodyLimit } from "hono/body-limit"
import { Access, authorizeProjectWith } from "./Access.ts"
import type { Principal } from "./Access.ts"
import { ApiError, badRequest, clipped, forbidden, payloadTooLarge, serverError, unauthenticated, wireBody } from "./ApiError.ts"
import { checkClientVersion, forUpstreamClient } from "./ClientVersion.ts"
import * as Eager from "./Eager.ts"
import { decodeRequest, upstreamBody } from "./RequestDecoding.ts"
import { Encoded } from "./Route.ts"
import type { AnyRoute, RouteContext } from "./Route.ts"

/**
 * The issues without those of an optional field's "or absent" branch (`Expected undefined,
 * actual 123`) where another issue names the same field: that one says what was wrong.
 */
const withoutAbsentBranch = (issues: ReadonlyArray<ParseResult.ArrayFormatterIssue>): ReadonlyArray<ParseResult.ArrayFormatterIssue> => {
  const absent = (issue: ParseResult.ArrayFormatterIssue) => issue.message.startsWith("Expected undefined, actual")
  const within = (path: ReadonlyArray<PropertyKey>, prefix: ReadonlyArray<PropertyKey>) =>
    prefix.length <= path.length && prefix.every((k, i) => k === path[i])
  return issues.filter((issue) => !(absent(issue) && issues.some((other) => other !== issue && !absent(other) && within(other.path, issue.path))))
}

/** Turns a schema decoding failure into a 422 (upstream's validation status) whose details carry each field path. */
export const fromParseError = (error: ParseResult.ParseError, prefix: ReadonlyArray<string | number> = []): ApiError =>
  new ApiError({
    status: 422,
    detail: withoutAbsentBranch(ParseResult.ArrayFormatter.formatErrorSync(error)).map((issue) => ({
      msg: issue.message,
      code: "invalid_request" as const,
      loc: [...prefix, ...issue.path.map((p) => (typeof p === "symbol" ? String(p) : p))]
    }))
  })

/** The default limit on a JSON request body: 4 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024

const bearer = (c: HonoContext): string | undefined => {
  const header = c.req.header("authorization")
  if (!header) return undefined
  const match = /^Bearer\s+(.+)$/i.exec(header.trim())
  return match ? match[1].trim() : undefined
}

/** The deepest nesting of arrays and objects a JSON request body may have. */
export const MAX_BODY_DEPTH = 64

/**
 * Whether `text` nests arrays and objects deeper than `limit` (brackets inside strings do not
 * count). Nothing the API takes comes near it, and a value nested thousands deep makes every
 * recursive walk of it (schema error formatting, JSON.stringify) overflow the stack: such a body
 * is refused before it is parsed.
 */
export const nestsDeeperThan = (text: string, limit: number): boolean => {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 92) i++ // a backslash: the next character is escaped
      else if (c === 34) inString = false
    } else if (c === 34) inString = true
    else if (c === 123 || c === 91) {
      if (++depth > limit) return true
    } else if (c === 125 || c === 93) depth--
  }
  return false
}

const parseJson = (text: string): Either.Either<unknown, ApiError> => {
  if (nestsDeeperThan(text, MAX_BODY_DEPTH)) {
    return Either.left(new ApiError({ status: 422, detail: [{ msg: `The request body nests arrays and objects deeper than ${MAX_BODY_DEPTH} levels`, code: "invalid_request", loc: ["body"] }] }))
  }
  try {
    return Either.right(text.trim() === "" ? {} : JSON.parse(text))
  } catch (cause) {
    return Either.left(new ApiError({ status: 422, detail: [{ msg: `The request body is not valid JSON: ${(cause as Error).message}`, code: "invalid_request", loc: ["body"] }] }))
  }
}

/**
 * Who calls and whether they may: the one authorization of every route. With the caller and
 * their role in memory the Access service answers with resolved Effects, and so does this.
 */
const authorize = (
  access: Access["Type"],
  route: AnyRoute<any>,
  c: HonoContext,
  params: Readonly<Record<string, string>>
): Effect.Effect<{ principal: Principal | undefined; projectName: string | undefined }, ApiError> => {
  const projectName: string | undefined = params.project_name
  if (route.access === "public") return Effect.succeed({ principal: undefined, projectName })
  const token = bearer(c)
  if (token === undefined) return Effect.fail(unauthenticated())
  const required = route.access
  return Eager.flatMap(access.authenticate(token), (principal) => {
    if (principal === undefined) return Effect.fail(unauthenticated("Invalid token"))
    if (required === "admin" && principal.globalRole !== "admin") {
      return Effect.fail(forbidden("This action needs the global admin role"))
    }
    if (typeof required !== "object") return Effect.succeed({ principal, projectName })
    if (projectName === undefined) return Effect.die(new Error(`route ${route.path} has no :project_name`))
    return Eager.map(authorizeProjectWith(access, principal, projectName, required.project), () => ({ principal, projectName }))
  })
}

/**
 * A route with its request decoder and response encoder built once, at mount time. They are
 * the synchronous (`Either`) forms — an `Either` is an Effect too — which skip the machinery
 * of effectful parsing: the wire schemas have no asynchronous parts.
 */
interface Mounted<R> {
  readonly route: AnyRoute<R>
  /**
   * For a route that declares `rememberInputs`, the inputs its latest request bodies decoded
   * to (a client polling a run sends the same body each time): decoding is much of the work of
   * a request answered from memory.
   */
  readonly inputs: Map<string, unknown> | undefined
  readonly decode: ((body: unknown) => Either.Either<unknown, ParseResult.ParseError | ApiError>) | undefined
  readonly encode: ((value: unknown) => Either.Either<unknown, ParseResult.ParseError>) | undefined
}

const prepare = <R>(route: AnyRoute<R>): Mounted<R> =>
  route.kind === "raw"
    ? { route, inputs: undefined, decode: undefined, encode: undefined }
    : {
        route,
        inputs: route.rememberInputs === true && route.request !== undefined ? new Map() : undefined,
        decode: route.request ? decodeRequest(route.request, upstreamBody(route.method, route.path)) : undefined,
        encode: Schema.encodeEither(route.response)
      }

/** Bodies longer than this are not remembered with their decoded input. */
const MAX_REMEMBERED_BODY = 1_024
/** Past this many remembered bodies a route's memory starts over. */
const MAX_REMEMBERED_INPUTS = 256

/** The request body decoded by the route's schema (remembered, for a route that asks). */
const decodeInput = <R>({ decode, inputs }: Mounted<R>, body: string): Either.Either<unknown, ApiError> => {
  const known = inputs?.get(body)
  if (known !== undefined) return Either.right(known)
  const json = parseJson(body)
  if (Either.isLeft(json)) return json
  const decoded = Either.mapLeft(decode!(json.right), (e) => (e instanceof ApiError ? e : fromParseError(e, ["body"])))
  if (inputs !== undefined && Either.isRight(decoded) && body.length <= MAX_REMEMBERED_BODY) {
    if (inputs.size >= MAX_REMEMBERED_INPUTS) inputs.clear()
    inputs.set(body, decoded.right)
  }
  return decoded
}

/**
 * A JSON answer. Built as a plain Response with plain-object headers, not through Hono's
 * `c.json`: that keeps a `Headers` object, which the Node adapter must then walk and copy for
 * every answer. `extra` are the headers every answer of the API carries (CORS).
 */
const jsonResponse = (text: string | Uint8Array, status: number, extra: Readonly<Record<string, string>> | undefined): Response =>
  new Response(text as BodyInit, { status, headers: extra === undefined ? JSON_HEADERS : { ...extra, "content-type": "application/json" } })

const JSON_HEADERS: Readonly<Record<string, string>> = { "content-type": "application/json" }

/** The server's services, resolved once when its runtime is built. */
interface Services {
  readonly access: Access["Type"]
  readonly service: <I, S>(tag: Context.Tag<I, S>) => S
}

/**
 * The request, from authorization to the encoded answer, as one Effect: one already resolved
 * when every step was answered from memory.
 */
const handle = <R>(
  mounted: Mounted<R>,
  services: Services,
  c: HonoContext,
  body: string,
  extra: Readonly<Record<string, string>> | undefined
): Effect.Effect<Response, ApiError, R> => {
  const { route, decode, encode } = mounted
  const params = c.req.param() as Record<string, string>
  // Upstream's client names its version; it is served what it understands (ClientVersion.ts).
  const upstream = c.req.header("x-api-version")
  if (upstream !== undefined) {
    const refused = checkClientVersion(upstream)
    if (refused !== undefined) return Effect.fail(refused)
  }
  const answer = (json: string | Uint8Array) => jsonResponse(upstream === undefined ? json : forUpstreamClient(json), 200, extra)
  return Eager.flatMap(authorize(services.access, route, c, params), ({ principal, projectName }) => {
    const ctx: RouteContext = { principal, projectName, params, hono: c, service: services.service }
    if (route.kind === "raw") return route.handler(ctx)
    const input = decode ? decodeInput(mounted, body) : Either.right(undefined)
    if (Either.isLeft(input)) return Effect.fail(input.left)
    return Eager.flatMap(route.handler(input.right, ctx), (output) => {
      // Already in wire form (read as stored): encoding it again would only cost time.
      if (output instanceof Encoded) return Effect.succeed(answer(output.json ?? JSON.stringify(output.value)))
      const wire = encode!(output)
      return Either.isLeft(wire)
        ? Effect.fail(serverError(`The server produced a response that does not match its schema`, wire.left))
        : Effect.succeed(answer(JSON.stringify(wire.right)))
    })
  })
}

/**
 * Turns `effect` into the answer: at once when it is already resolved, else by running it on
 * `runtime` (a fiber runs synchronously until its first wait, so one that finishes without
 * waiting is answered without a turn of the event loop; one that waits answers when it ends).
 */
const runFast = <A, E, R>(runtime: Runtime.Runtime<R>, effect: Effect.Effect<A, E, R>, onExit: (exit: Exit.Exit<A, E>) => A): A | Promise<A> => {
  if (Exit.isExit(effect)) return onExit(effect as Exit.Exit<A, E>)
  const fiber = Runtime.runFork(runtime, effect)
  const exit = fiber.unsafePoll()
  if (exit !== null) return onExit(exit)
  return new Promise((resolve) => fiber.addObserver((exit) => resolve(onExit(exit))))
}

export const errorResponse = (c: HonoContext, error: ApiError, extra?: Readonly<Record<string, string>>): Response => {
  const sent = clipped(error)
  return jsonResponse(JSON.stringify(wireBody(sent)), sent.status, extra)
}

/** "4 MiB (4,194,304 bytes)": a limit as its error message names it. */
const formatBytes = (n: number): string => {
  const units = [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const
  const unit = units.find(([, size]) => n >= size && n % size === 0)
  return unit ? `${n / unit[1]} ${unit[0]} (${n.toLocaleString("en-US")} bytes)` : `${n.toLocaleString("en-US")} bytes`
}

export interface MountOptions {
  /**
   * Headers every answer to this request carries (the server's CORS headers), or undefined for
   * none. JSON routes put them in the answer they build; raw routes' answers made with the Hono
   * context (`c.json`, `c.body` …) get them as prepared headers.
   */
  readonly headers?: ((c: HonoContext) => Readonly<Record<string, string>> | undefined) | undefined
  /**
   * The largest JSON request body accepted, in bytes (default `DEFAULT_MAX_BODY_BYTES`); a
   * larger one is answered 413 before it is read. Raw routes read their bodies themselves.
   */
  readonly maxBodyBytes?: number | undefined
}

/** Mounts every route on `app`, running handlers on `runtime`. */
export const mountRoutes = <R>(
  app: Hono,
  routes: ReadonlyArray<AnyRoute<R>>,
  runtime: ManagedRuntime.ManagedRuntime<R | Access, never>,
  options: MountOptions = {}
): void => {
  const headersOf = options.headers
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes < 0) throw new Error(`maxBodyBytes must be a whole number of bytes ≥ 0, not ${maxBodyBytes}`)
  const tooLarge = (c: HonoContext) =>
    errorResponse(c, payloadTooLarge(`The request body is larger than the limit of ${formatBytes(maxBodyBytes)}`), headersOf?.(c))
  // A body without a declared length (chunked) is counted as it arrives, and refused once past
  // the limit; `next` reads it from the buffer the middleware kept.
  const limit = bodyLimit({ maxSize: maxBodyBytes, onError: tooLarge })

  /**
   * The text of a JSON request body, or the 413 that refuses it. A declared length is checked
   * before anything is read (and the Node adapter then reads the body straight off the socket,
   * which `hono/body-limit`'s look at the body stream would prevent); an undeclared one goes
   * through `hono/body-limit`.
   */
  const readBody = (c: HonoContext): Promise<string | Response> => {
    const declared = c.req.header("content-length")
    if (declared !== undefined && c.req.header("transfer-encoding") === undefined) {
      return Number(declared) > maxBodyBytes ? Promise.resolve(tooLarge(c)) : c.req.text()
    }
    let text = ""
    return Promise.resolve(
      limit(c, async () => {
        text = await c.req.text()
      })
    ).then((refused) => (refused instanceof Response ? refused : text))
  }

  // The runtime, once built, and the services requests use from it.
  let built: Runtime.Runtime<R | Access> | undefined
  let services: Services | undefined
  const build = (rt: Runtime.Runtime<R | Access>): Services => {
    built = rt
    const context = rt.context
    return (services = {
      access: Context.unsafeGet(context, Access),
      service: <I, S>(tag: Context.Tag<I, S>) => Context.unsafeGet(context as Context.Context<I>, tag)
    })
  }
  for (const route of routes) {
    const mounted = prepare(route)
    const isJson = route.kind === "json"
    const toResponse = (c: HonoContext, extra: Readonly<Record<string, string>> | undefined) => (exit: Exit.Exit<Response, ApiError>): Response => {
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
      const onExit = toResponse(c, extra)
      if (built !== undefined) return runFast(built, handle(mounted, services!, c, body, extra), onExit)
      return runtime.runtime().then(
        (rt) => runFast(rt, handle(mounted, build(rt), c, body, extra), onExit),
        (cause) => onExit(Exit.die(cause))
      )
    }
    // Each route is its own Hono handler with no middleware in front, so Hono calls it directly
    // (a matched middleware would make Hono compose a chain for every request).
    app.on(route.method, route.path, (c) => {
      const extra = headersOf?.(c)
      if (!isJson && extra !== undefined) for (const name in extra) c.header(name, extra[name])
      // The body is read before the handler runs, so that (with what it needs cached) it runs in one go.
      if (mounted.decode === undefined) return respond(c, "", extra)
      return readBody(c).then(
        (body) => (typeof body === "string" ? respond(c, body, extra) : body),
        (cause) => errorResponse(c, badRequest(`The request body could not be read: ${(cause as Error).message}`), isJson ? extra : undefined)
      )
    })
  }
}
