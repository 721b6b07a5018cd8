/**
 * The services proxy: `/proxy/services/{project}/{run}/…` on the server forwards every method
 * to a replica of the service, with the request and the answer streamed both ways (nothing is
 * buffered), and WebSockets carried through the runtime adapter's upgrade hook. Callers need a
 * user token of a project member unless the service says `auth: false`. Replicas are chosen by
 * fewest requests in flight; one that cannot be reached or breaks off an answer leaves the
 * rotation for a while. A request that finds no replica (scaled to zero, still starting) is held
 * until one is ready or `holdTimeoutMs` has passed, and only then answered 503.
 */
import type * as http from "node:http"
import { Context, Effect, Exit, Runtime } from "effect"
import type { Context as HonoContext, Hono } from "hono"
import type { UpgradeHandler, UpgradeTarget } from "../runner/adapter/types.ts"
import { Access, authorizeProjectWith } from "../server/Access.ts"
import { type ApiError, clipped, excerpt, noRoute, serverError, unauthenticatedPage } from "../server/ApiError.ts"
import * as Eager from "../server/Eager.ts"
import { answerBody, type BodySource, OutgoingBody, readSmallAnswer, ReplicaRequestError, sendToReplica } from "./ReplicaClient.ts"
import type { Replica, ServiceEntry, ServiceRegistryService } from "./ServiceRegistry.ts"
import { RateLimiter } from "./RateLimiter.ts"
import { type ClientAddress, makeClientAddress } from "./ClientAddress.ts"
import type { ModelRouter } from "./ModelRouter.ts"

/** Upstream's DSTACK_SERVICE_CLIENT_TIMEOUT: how long a request may wait for a replica. */
export const DEFAULT_HOLD_TIMEOUT_MS = 60_000
/** A replica that broke off an answer stays out of rotation this long. */
const BROKEN_ANSWER_OUT_MS = 5_000

export interface ServiceProxyOptions {
  /**
   * How long a request waits for a replica to be ready (a service scaled to zero, a replica
   * starting) before it is answered 503. Default 60 s.
   */
  readonly holdTimeoutMs?: number | undefined
  /**
   * The reverse proxies or load balancers in front of the server: IP addresses, CIDR ranges, or
   * `loopback`, `linklocal`, `uniquelocal`. A request from one of them comes from the nearest
   * address in its `X-Forwarded-For` that is not trusted itself (ClientAddress.ts): what
   * `rate_limits` count and replicas see in `X-Real-IP`. Default none: the connection's peer.
   */
  readonly trustedProxies?: ReadonlyArray<string> | undefined
}

/** What the proxy tells the autoscaler. */
export interface ProxyHooks {
  /** A request waits and no replica is in rotation (scale from zero). */
  readonly demand: (entry: ServiceEntry) => void
  /** A replica's requests in flight went down (a draining replica may stop at 0). */
  readonly released: (entry: ServiceEntry, replica: Replica) => void
}

const HOP_BY_HOP = new Set([
  "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
  "transfer-encoding", "upgrade", "host",
  // Set by the proxy itself (forwardedHeaders): a caller's own are not passed on as they are.
  "x-real-ip", "x-forwarded-for"
])

/** Who called, for the replica: what `X-Real-IP` and `X-Forwarded-For` say there. */
export interface Caller {
  /** The client's address (ClientAddress.ts). */
  readonly ip: string | undefined
  /** The connection's peer. */
  readonly peer: string | undefined
  /** The request's own `X-Forwarded-For`, if any. */
  readonly forwardedFor: string | undefined
}

/**
 * `X-Real-IP` (the client, as upstream's gateway sets it) and `X-Forwarded-For` (the request's own
 * with the peer appended, as nginx's `$proxy_add_x_forwarded_for`).
 */
const forwardedHeaders = (caller: Caller, headers: Record<string, string | Array<string>>): void => {
  if (caller.ip !== undefined) headers["x-real-ip"] = caller.ip
  const { forwardedFor, peer } = caller
  const chain = forwardedFor ? (peer ? `${forwardedFor}, ${peer}` : forwardedFor) : peer
  if (chain) headers["x-forwarded-for"] = chain
}
const RESPONSE_HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-authenticate", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"])

const PREFIX = "/proxy/services/"

/** `/proxy/services/p/r/rest?q` → its parts; undefined when the path has no run. */
export const parseServicePath = (pathname: string): { project: string; run: string; prefix: string; rest: string | undefined } | undefined => {
  if (!pathname.startsWith(PREFIX)) return undefined
  const parts = pathname.slice(PREFIX.length).split("/")
  if (parts.length < 2 || parts[0] === "" || parts[1] === "") return undefined
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s)
    } catch {
      return s
    }
  }
  const prefix = `${PREFIX}${parts[0]}/${parts[1]}`
  return { project: decode(parts[0]), run: decode(parts[1]), prefix, rest: parts.length === 2 ? undefined : `/${parts.slice(2).join("/")}` }
}

export const errorJson = (error: ApiError, headers?: Record<string, string>): Response => {
  const { detail, status } = clipped(error)
  return new Response(JSON.stringify({ detail }), { status, headers: { "content-type": "application/json", ...headers } })
}

const unavailable = (message: string): Response =>
  new Response(JSON.stringify({ detail: [{ msg: message, code: "service_unavailable" }] }), { status: 503, headers: { "content-type": "application/json", "retry-after": "1" } })

const badGateway = (message: string): Response =>
  new Response(JSON.stringify({ detail: [{ msg: message, code: "bad_gateway" }] }), { status: 502, headers: { "content-type": "application/json" } })

const bearer = (header: string | null | undefined): string | undefined => {
  const match = header ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null
  return match ? match[1].trim() : undefined
}

/** Picks the replica in rotation with the fewest requests in flight (round robin among equals). */
export const pickReplica = (replicas: ReadonlyArray<Replica>, now: number, turn: number): Replica | undefined => {
  let best: Replica | undefined
  const n = replicas.length
  for (let i = 0; i < n; i++) {
    const replica = replicas[(turn + i) % n]
    if (!replica.inRotation(now)) continue
    if (best === undefined || replica.outstanding < best.outstanding) best = replica
  }
  return best
}

/** A failure's message, for the caller (an Effect failure's own message where it has one). */
const reasonOf = (error: unknown): string => {
  const e = error as { message?: unknown; reason?: unknown } | null
  const message = typeof e?.message === "string" && e.message !== "" ? e.message : typeof e?.reason === "string" ? e.reason : String(error)
  return excerpt(message, 300)
}

/** A replica taken for a request, with where it is reached. */
interface Got {
  readonly replica: Replica
  readonly host: string
  readonly port: number
}

/**
 * The path and query of a request's URL (an absolute URL as the runtimes hand it over, already
 * normalized): what `new URL` would give as `pathname` and `search`, without parsing it.
 */
export const pathAndQuery = (url: string): { pathname: string; search: string } => {
  const start = url.indexOf("/", url.indexOf("//") + 2)
  const path = start < 0 ? "/" : url.slice(start)
  const q = path.indexOf("?")
  return q < 0 ? { pathname: path, search: "" } : { pathname: path.slice(0, q), search: path.slice(q) }
}

/** Statuses whose answers have no body. */
const NULL_BODY = new Set([101, 204, 205, 304])

export interface ServiceProxy {
  /** The proxy's answer to a request under `/proxy/services/`. */
  /**
   * The proxy's answer to a request under `/proxy/services/`. `incoming` is the caller's Node
   * request when the runtime has one: its headers and body are then read from it directly.
   */
  readonly handle: (request: Request, clientIp: string | undefined, incoming?: http.IncomingMessage) => Promise<Response>
  /** The runtime adapter's upgrade hook (WebSockets). */
  readonly upgrade: UpgradeHandler
  /** Whether the caller (the `Authorization` header) is a member of the project; a Response when not. */
  readonly authorizeMember: (project: string, authorization: string | null) => Response | undefined | Promise<Response | undefined>
  /** The live service of that name, or the 404 (or 500) answer. */
  readonly lookup: (project: string, runName: string) => ServiceEntry | Response | Promise<ServiceEntry | Response>
  /** Who calls, from the connection's peer and the request's `X-Forwarded-For` (the model routes use it too). */
  readonly callerOf: (peer: string | undefined, forwardedFor: string | null | undefined) => Caller
  /** Forwards a request to a replica of a service (the model routes use it too); `caller` sets `X-Real-IP` and `X-Forwarded-For`. */
  readonly forward: (
    entry: ServiceEntry,
    request: Request,
    path: string,
    options: {
      readonly dropAuthorization: boolean
      readonly body?: BodySource | null
      readonly incoming?: http.IncomingMessage | undefined
      readonly caller?: Caller | undefined
    }
  ) => Promise<Response>
}

export const makeServiceProxy = (
  registry: ServiceRegistryService,
  runtime: Runtime.Runtime<Access>,
  hooks: ProxyHooks,
  options: ServiceProxyOptions = {},
  limiter: RateLimiter = new RateLimiter(),
  clientAddress: ClientAddress = makeClientAddress(options.trustedProxies)
): ServiceProxy => {
  const holdTimeoutMs = options.holdTimeoutMs ?? DEFAULT_HOLD_TIMEOUT_MS
  const run = Runtime.runPromise(runtime)
  let turn = 0

  const access = Context.get(runtime.context, Access)

  /** Checks the caller's token and project membership; a Response when refused. */
  const authorize = (entry: ServiceEntry, authorization: string | null): Response | undefined | Promise<Response | undefined> =>
    entry.configuration.auth ? authorizeMember(entry.project, authorization) : undefined

  /**
   * The server's one check of a caller's project role (`authorizeProjectWith`); a caller and role
   * the server remembers are answered at once, without a fiber.
   */
  const authorizeMember = (project: string, authorization: string | null): Response | undefined | Promise<Response | undefined> => {
    const token = bearer(authorization)
    if (token === undefined) return errorJson(unauthenticatedPage())
    const checked = Eager.flatMap(access.authenticate(token), (principal) =>
      principal === undefined ? Effect.fail(unauthenticatedPage("Invalid token")) : authorizeProjectWith(access, principal, project, "user"))
    if (Exit.isExit(checked)) {
      const exit = checked as unknown as Exit.Exit<unknown, ApiError>
      if (Exit.isSuccess(exit)) return undefined
      if (exit.cause._tag === "Fail") return errorJson(exit.cause.error)
    }
    return run(checked.pipe(Effect.as(undefined), Effect.catchAll((e: ApiError) => Effect.succeed(errorJson(e)))))
  }

  const lookup = (project: string, runName: string): ServiceEntry | Response | Promise<ServiceEntry | Response> => {
    const found = (entry: ServiceEntry | undefined): ServiceEntry | Response =>
      entry ?? errorJson(noRoute(`Service ${excerpt(runName)} does not exist in project ${excerpt(project)} (or has finished)`))
    const read = registry.lookup(project, runName)
    if (Exit.isExit(read) && Exit.isSuccess(read as unknown as Exit.Exit<ServiceEntry | undefined>)) return found((read as unknown as Exit.Success<ServiceEntry | undefined, never>).value)
    return run(read.pipe(
      Effect.map(found),
      Effect.catchAll((e) => Effect.succeed(errorJson(serverError(`cannot read service ${excerpt(runName)}: ${e.message ?? e.reason}`))))
    ))
  }

  /**
   * A replica in rotation with its address, waiting for one (scale from zero, a replica still
   * starting) until `deadline`; undefined when none came in time. The replica's count of
   * requests in flight includes the caller's.
   */
  const acquire = (entry: ServiceEntry, deadline: number, signal: AbortSignal | undefined): Got | undefined | Promise<Got | undefined> => {
    // A replica in rotation whose address is known and that has accepted a connection is taken
    // at once (no promise); anything else goes through the loop below.
    if (!entry.stale && signal?.aborted !== true) {
      const replica = pickReplica(entry.replicas, Date.now(), turn)
      if (replica !== undefined && replica.listening && replica.address !== undefined) {
        turn++
        replica.outstanding++
        return { replica, host: replica.address.host, port: replica.address.port }
      }
    }
    return acquireWaiting(entry, deadline, signal)
  }

  const acquireWaiting = async (entry: ServiceEntry, deadline: number, signal: AbortSignal | undefined): Promise<Got | undefined> => {
    for (;;) {
      if (signal?.aborted) return undefined
      // Stale: the registry's read (or its decode of a row just written) in flight is awaited, else one is made.
      if (entry.stale) await (entry.following ?? run(Effect.ignore(registry.refresh(entry))))
      const now = Date.now()
      const replica = pickReplica(entry.replicas, now, turn++)
      if (replica !== undefined) {
        replica.outstanding++
        try {
          const address = await registry.address(replica)
          // A job is running before its app listens: a replica takes requests once it accepts a
          // connection, so that a request with a body is not sent (and spent) into a refusal.
          // Until then it is tried again soon (not a failure: its app is starting).
          if (!replica.listening && !(await replica.listeningNow(address))) {
            replica.outstanding--
            replica.lastError = "its app does not accept connections yet"
            replica.starting(Date.now())
            continue
          }
          return { replica, host: address.host, port: address.port }
        } catch (error) {
          replica.outstanding--
          replica.lastError = reasonOf(error)
          replica.failed(Date.now())
          continue
        }
      }
      if (now >= deadline || entry.finished) return undefined
      if (entry.replicas.every((r) => r.draining)) hooks.demand(entry)
      // Wait for the replicas to change, or for the first one out of rotation to come back.
      const back = entry.replicas.filter((r) => !r.draining && r.ready).reduce((t, r) => Math.min(t, r.outUntil), Infinity)
      await registry.changed(entry, Math.max(1, Math.min(deadline, back) - now))
    }
  }

  /** The 503 of a request that found no replica in time, with why each replica could not be reached. */
  const notReady = (entry: ServiceEntry): string => {
    const why = entry.replicas.filter((r) => r.lastError !== undefined).map((r) => `replica ${r.replicaNum}: ${r.lastError}`)
    return `No replica of service ${entry.runName} became ready within ${Math.round(holdTimeoutMs / 1000)} s${why.length > 0 ? ` (${why.join("; ")})` : ""}`
  }

  const release = (entry: ServiceEntry, replica: Replica) => {
    replica.outstanding--
    hooks.released(entry, replica)
  }

  /** The replica's answer passed on: small ones read whole, others streamed; counts the request done when it ends. */
  const passOn = async (entry: ServiceEntry, replica: Replica, answer: { status: number; statusText: string; rawHeaders: ReadonlyArray<string>; message: http.IncomingMessage }): Promise<Response> => {
    // A plain record (the Node server writes it as it is), or pairs when a name repeats (set-cookie).
    let headers: Record<string, string> | Array<[string, string]> = {}
    const raw = answer.rawHeaders
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i].toLowerCase()
      if (RESPONSE_HOP_BY_HOP.has(name)) continue
      if (Array.isArray(headers)) headers.push([name, raw[i + 1]])
      else if (headers[name] === undefined) headers[name] = raw[i + 1]
      else headers = [...Object.entries(headers), [name, raw[i + 1]]]
    }
    const init = { status: answer.status, statusText: answer.statusText, headers }
    if (NULL_BODY.has(answer.status)) {
      answer.message.resume()
      release(entry, replica)
      return new Response(null, init)
    }
    const small = readSmallAnswer(answer.message)
    if (small !== undefined) {
      try {
        const bytes = await small
        release(entry, replica)
        return new Response(bytes as Uint8Array<ArrayBuffer>, init)
      } catch (error) {
        replica.failed(Date.now(), BROKEN_ANSWER_OUT_MS)
        release(entry, replica)
        entry.metrics.errors++
        return badGateway(`replica ${replica.replicaNum} of ${entry.runName} broke off its answer: ${error instanceof Error ? error.message : String(error)}`)
      }
    }
    const body = answerBody(answer.message, (broken) => {
      if (broken) replica.failed(Date.now(), BROKEN_ANSWER_OUT_MS)
      release(entry, replica)
    })
    return new Response(body, init)
  }

  const forward: ServiceProxy["forward"] = async (entry, request, path, opts) => {
    const started = Date.now()
    entry.metrics.request(started)
    const headers: Record<string, string | Array<string>> = {}
    const keep = (name: string) => !HOP_BY_HOP.has(name) && !(opts.dropAuthorization && name === "authorization")
    if (opts.incoming !== undefined) {
      const raw = opts.incoming.rawHeaders
      for (let i = 0; i < raw.length; i += 2) {
        const name = raw[i].toLowerCase()
        if (!keep(name)) continue
        const had = headers[name]
        headers[name] = had === undefined ? raw[i + 1] : Array.isArray(had) ? [...had, raw[i + 1]] : [had, raw[i + 1]]
      }
    } else request.headers.forEach((value, name) => {
      if (keep(name)) headers[name] = value
    })
    if (opts.caller !== undefined) forwardedHeaders(opts.caller, headers)
    const source = opts.body !== undefined ? opts.body : opts.incoming ?? request.body
    const body = source === null || request.method === "GET" || request.method === "HEAD" ? null : new OutgoingBody(source)
    if (body !== null && headers["content-length"] === undefined) headers["transfer-encoding"] = "chunked"
    const deadline = started + holdTimeoutMs
    for (;;) {
      const taking = acquire(entry, deadline, undefined)
      const got = taking instanceof Promise ? await taking : taking
      if (got === undefined) {
        entry.metrics.errors++
        body?.cancel("no replica")
        return unavailable(entry.finished ? `Service ${entry.runName} has finished` : notReady(entry))
      }
      const { replica, host, port } = got
      headers.host = `${host.includes(":") ? `[${host}]` : host}:${port}`
      let answer
      try {
        answer = await sendToReplica(registry.agent, { host, port }, request.method, path, headers, body)
      } catch (error) {
        release(entry, replica)
        const failure = error instanceof ReplicaRequestError ? error : undefined
        // Nothing of the body was sent: another replica (or this one, later) may take it.
        if (failure !== undefined && !failure.sent) {
          replica.notReached(Date.now(), failure.cause.message, failure.reusedSocket)
          continue
        }
        replica.failed(Date.now())
        entry.metrics.errors++
        return badGateway(`replica ${replica.replicaNum} of ${entry.runName} failed: ${failure?.cause.message ?? String(error)}`)
      }
      replica.succeeded()
      entry.metrics.latency(Date.now() - started)
      return passOn(entry, replica, answer)
    }
  }

  /** Who calls: the client's address from the peer's and the request's `X-Forwarded-For`. */
  const callerOf = (peer: string | undefined, forwardedFor: string | null | undefined): Caller => {
    const xff = forwardedFor ?? undefined
    return { ip: clientAddress(peer, xff), peer, forwardedFor: xff }
  }

  const handle = async (request: Request, peer: string | undefined, incoming?: http.IncomingMessage): Promise<Response> => {
    const url = pathAndQuery(request.url)
    const parsed = parseServicePath(url.pathname)
    if (parsed === undefined) return errorJson(noRoute(`No service at ${excerpt(url.pathname, 200)}`))
    // A known service and a remembered caller are answered without waiting (no promise to await).
    const found = lookup(parsed.project, parsed.run)
    const entry = found instanceof Promise ? await found : found
    if (entry instanceof Response) return entry
    const checked = authorize(entry, incoming !== undefined ? incoming.headers.authorization ?? null : request.headers.get("authorization"))
    const refused = checked instanceof Promise ? await checked : checked
    if (refused !== undefined) return refused
    // Upstream's answer to a service root without its slash: relative links then resolve under it.
    if (parsed.rest === undefined) {
      return new Response(null, { status: 308, headers: { location: `${parsed.prefix}/${url.search}` } })
    }
    const path = (entry.configuration.stripPrefix ? parsed.rest : url.pathname) + url.search
    const caller = callerOf(peer, incoming !== undefined ? (incoming.headers["x-forwarded-for"] as string | undefined) : request.headers.get("x-forwarded-for"))
    const limited = limiter.check(entry, parsed.rest, caller.ip ?? "unknown", Date.now())
    if (limited !== undefined) return limited
    return forward(entry, request, path, { dropAuthorization: entry.configuration.auth, incoming, caller })
  }

  const upgrade: UpgradeHandler = async (request, peer) => {
    const url = pathAndQuery(request.url)
    const parsed = parseServicePath(url.pathname)
    if (parsed === undefined || parsed.rest === undefined) return errorJson(noRoute(`No service at ${excerpt(url.pathname, 200)}`))
    const entry = await lookup(parsed.project, parsed.run)
    if (entry instanceof Response) return entry
    const refused = await authorize(entry, request.headers.get("authorization"))
    if (refused !== undefined) return refused
    const caller = callerOf(peer, request.headers.get("x-forwarded-for"))
    const limited = limiter.check(entry, parsed.rest, caller.ip ?? "unknown", Date.now())
    if (limited !== undefined) return limited
    entry.metrics.request(Date.now())
    const got = await acquire(entry, Date.now() + holdTimeoutMs, undefined)
    if (got === undefined) {
      entry.metrics.errors++
      return unavailable(notReady(entry))
    }
    const { replica, host, port } = got
    const headers: Record<string, string> = {}
    request.headers.forEach((value, name) => {
      if (name === "host" || name === "x-real-ip" || name === "x-forwarded-for" || (entry.configuration.auth && name === "authorization")) return
      headers[name] = value
    })
    forwardedHeaders(caller, headers)
    headers.host = `${host}:${port}`
    const target: UpgradeTarget = {
      host,
      port,
      path: (entry.configuration.stripPrefix ? parsed.rest : url.pathname) + url.search,
      headers,
      done: (failed) => {
        if (failed) replica.failed(Date.now())
        release(entry, replica)
      }
    }
    return target
  }

  return { handle, upgrade, forward, authorizeMember, lookup, callerOf }
}

/** Mounts the proxy on the app: one route for every method under `/proxy/services/`. */
export const mountServiceProxy = (app: Hono, proxy: () => Promise<ServiceProxy>, models: () => Promise<ModelRouter>): void => {
  let ready: ServiceProxy | undefined
  const handle = (c: HonoContext, proxy: ServiceProxy) => {
    const env = c.env as { incoming?: http.IncomingMessage } | undefined
    return proxy.handle(c.req.raw, clientIpOf(c), env?.incoming)
  }
  app.all("/proxy/services/*", (c: HonoContext) =>
    ready !== undefined ? handle(c, ready) : proxy().then((made) => handle(c, (ready = made))))
  app.all("/proxy/models/*", async (c: HonoContext) => (await models()).handle(c.req.raw, clientIpOf(c)))
}

/** The caller's address: from the Node adapter's socket, or what the Deno adapter passes. */
export const clientIpOf = (c: HonoContext): string | undefined => {
  const env = c.env as { incoming?: { socket?: { remoteAddress?: string } }; remoteAddr?: string } | undefined
  return env?.incoming?.socket?.remoteAddress ?? env?.remoteAddr
}
