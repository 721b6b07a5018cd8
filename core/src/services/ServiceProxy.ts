/**
 * The services proxy: `/proxy/services/{project}/{run}/…` on the server forwards every method
 * to a replica of the service, with the request and the answer streamed both ways (nothing is
 * buffered), and WebSockets carried through the runtime adapter's upgrade hook. Callers need a
 * user token of a project member unless the service says `auth: false`. Replicas are chosen by
 * fewest requests in flight; one that cannot be reached or breaks off an answer leaves the
 * rotation for a while. A request that finds no replica (scaled to zero, still starting) is held
 * until one is ready or `holdTimeoutMs` has passed, and only then answered 503.
 */
import * as net from "node:net"
import { Effect, Runtime } from "effect"
import type { Context as HonoContext, Hono } from "hono"
import type { UpgradeHandler, UpgradeTarget } from "../runner/adapter/types.ts"
import { Access, authorizeProject } from "../server/Access.ts"
import { type ApiError, clipped, excerpt, noRoute, serverError, unauthenticatedPage } from "../server/ApiError.ts"
import type { Replica, ServiceEntry, ServiceRegistryService } from "./ServiceRegistry.ts"
import { RateLimiter } from "./RateLimiter.ts"
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
  "transfer-encoding", "upgrade", "host", "accept-encoding"
])
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

/** Whether something accepts a TCP connection at host:port (within 2 s). */
const accepts = (host: string, port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = net.connect({ host, port })
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(2_000, () => done(false))
    socket.once("connect", () => done(true))
    socket.once("error", () => done(false))
  })

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

/** A body read from one reader across attempts: an attempt that never pulled consumed nothing. */
class ReplayableBody {
  started = false
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>
  constructor(body: ReadableStream<Uint8Array>) {
    this.reader = body.getReader()
  }
  stream(): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        this.started = true
        const { done, value } = await this.reader.read()
        if (done) controller.close()
        else controller.enqueue(value)
      },
      cancel: (reason) => this.reader.cancel(reason)
    }, { highWaterMark: 0 })
  }
}

export interface ServiceProxy {
  /** The proxy's answer to a request under `/proxy/services/`. */
  readonly handle: (request: Request, clientIp: string | undefined) => Promise<Response>
  /** The runtime adapter's upgrade hook (WebSockets). */
  readonly upgrade: UpgradeHandler
  /** Whether the caller (the `Authorization` header) is a member of the project; a Response when not. */
  readonly authorizeMember: (project: string, authorization: string | null) => Promise<Response | undefined>
  /** The live service of that name, or the 404 (or 500) answer. */
  readonly lookup: (project: string, runName: string) => Promise<ServiceEntry | Response>
  /** Forwards a request to a replica of a service (the model routes use it too). */
  readonly forward: (entry: ServiceEntry, request: Request, path: string, options: { readonly dropAuthorization: boolean; readonly body?: ReadableStream<Uint8Array> | null }) => Promise<Response>
}

export const makeServiceProxy = (
  registry: ServiceRegistryService,
  runtime: Runtime.Runtime<Access>,
  hooks: ProxyHooks,
  options: ServiceProxyOptions = {}
): ServiceProxy => {
  const holdTimeoutMs = options.holdTimeoutMs ?? DEFAULT_HOLD_TIMEOUT_MS
  const run = Runtime.runPromise(runtime)
  const limiter = new RateLimiter()
  let turn = 0

  /** Checks the caller's token and project membership; a Response when refused. */
  const authorize = (entry: ServiceEntry, authorization: string | null): Promise<Response | undefined> =>
    entry.configuration.auth ? authorizeMember(entry.project, authorization) : Promise.resolve(undefined)

  const authorizeMember = (project: string, authorization: string | null): Promise<Response | undefined> => {
    const token = bearer(authorization)
    if (token === undefined) return Promise.resolve(errorJson(unauthenticatedPage()))
    return run(
      Effect.flatMap(Access, (access) => access.authenticate(token)).pipe(
        Effect.flatMap((principal) =>
          principal === undefined ? Effect.fail(unauthenticatedPage("Invalid token")) : authorizeProject(principal, project, "user")
        ),
        Effect.as(undefined),
        Effect.catchAll((e: ApiError) => Effect.succeed(errorJson(e)))
      )
    )
  }

  const lookup = (project: string, runName: string): Promise<ServiceEntry | Response> =>
    run(registry.lookup(project, runName).pipe(
      Effect.map((entry): ServiceEntry | Response => entry ?? errorJson(noRoute(`Service ${excerpt(runName)} does not exist in project ${excerpt(project)} (or has finished)`))),
      Effect.catchAll((e) => Effect.succeed(errorJson(serverError(`cannot read service ${excerpt(runName)}: ${e.message ?? e.reason}`))))
    ))

  /**
   * A replica in rotation with its address, waiting for one (scale from zero, a replica still
   * starting) until `deadline`; undefined when none came in time. The replica's count of
   * requests in flight includes the caller's.
   */
  const acquire = async (entry: ServiceEntry, deadline: number, signal: AbortSignal | undefined): Promise<{ replica: Replica; host: string; port: number } | undefined> => {
    for (;;) {
      if (signal?.aborted) return undefined
      if (entry.stale) await run(Effect.ignore(registry.refresh(entry)))
      const now = Date.now()
      const replica = pickReplica(entry.replicas, now, turn++)
      if (replica !== undefined) {
        replica.outstanding++
        try {
          const address = await registry.address(replica)
          // A job is running before its app listens: a replica takes requests once it accepts a
          // connection, so that a request with a body is not sent (and spent) into a refusal.
          if (!replica.listening) {
            if (!(await accepts(address.host, address.port))) throw new Error("not listening yet")
            replica.listening = true
          }
          return { replica, host: address.host, port: address.port }
        } catch {
          replica.outstanding--
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

  const release = (entry: ServiceEntry, replica: Replica) => {
    replica.outstanding--
    hooks.released(entry, replica)
  }

  /** The answer's body, passed through as it comes; counts the request done when it ends. */
  const passThrough = (entry: ServiceEntry, replica: Replica, response: Response): Response => {
    const headers = new Headers()
    response.headers.forEach((value, name) => {
      if (!RESPONSE_HOP_BY_HOP.has(name)) headers.append(name, value)
    })
    // fetch decodes compressed bodies: what goes on is the decoded body.
    if (headers.has("content-encoding")) {
      headers.delete("content-encoding")
      headers.delete("content-length")
    }
    if (response.body === null) {
      release(entry, replica)
      return new Response(null, { status: response.status, statusText: response.statusText, headers })
    }
    const reader = response.body.getReader()
    let ended = false
    let cancelled = false
    const end = (broken: boolean) => {
      if (ended) return
      ended = true
      if (broken) replica.failed(Date.now(), BROKEN_ANSWER_OUT_MS)
      release(entry, replica)
    }
    const body = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        try {
          const { done, value } = await reader.read()
          if (done) {
            end(false)
            controller.close()
          } else controller.enqueue(value)
        } catch (error) {
          // The caller hanging up cancels this stream first; an error here is the replica's.
          end(!cancelled)
          controller.error(error)
        }
      },
      cancel: (reason) => {
        cancelled = true
        end(false)
        return reader.cancel(reason)
      }
    }, { highWaterMark: 0 })
    return new Response(body, { status: response.status, statusText: response.statusText, headers })
  }

  const forward: ServiceProxy["forward"] = async (entry, request, path, opts) => {
    const started = Date.now()
    entry.metrics.request(started)
    const headers = new Headers()
    request.headers.forEach((value, name) => {
      if (!HOP_BY_HOP.has(name) && !(opts.dropAuthorization && name === "authorization")) headers.append(name, value)
    })
    const source = opts.body !== undefined ? opts.body : request.body
    const body = source === null || request.method === "GET" || request.method === "HEAD" ? null : new ReplayableBody(source)
    const deadline = started + holdTimeoutMs
    // The request's own signal is not passed on: Deno aborts it once the answer's headers are
    // sent. A caller that hangs up cancels the answer's body, which cancels the replica's.
    for (;;) {
      const got = await acquire(entry, deadline, undefined)
      if (got === undefined) {
        entry.metrics.errors++
        return unavailable(entry.finished
          ? `Service ${entry.runName} has finished`
          : `No replica of service ${entry.runName} became ready within ${Math.round(holdTimeoutMs / 1000)} s`)
      }
      const { replica, host, port } = got
      const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}${path}`
      headers.set("host", `${host}:${port}`)
      let response: Response
      try {
        response = await fetch(url, {
          method: request.method,
          headers,
          body: body === null ? null : body.stream(),
          redirect: "manual",
          ...(body === null ? {} : { duplex: "half" })
        } as RequestInit)
      } catch (error) {
        release(entry, replica)
        replica.failed(Date.now())
        // Nothing of the body was sent: another replica (or this one, later) may take it.
        if (body === null || !body.started) continue
        entry.metrics.errors++
        return badGateway(`replica ${replica.replicaNum} of ${entry.runName} failed: ${error instanceof Error ? (error.cause as Error | undefined)?.message ?? error.message : String(error)}`)
      }
      replica.succeeded()
      entry.metrics.latency(Date.now() - started)
      return passThrough(entry, replica, response)
    }
  }

  const handle = async (request: Request, clientIp: string | undefined): Promise<Response> => {
    const url = new URL(request.url)
    const parsed = parseServicePath(url.pathname)
    if (parsed === undefined) return errorJson(noRoute(`No service at ${excerpt(url.pathname, 200)}`))
    const entry = await lookup(parsed.project, parsed.run)
    if (entry instanceof Response) return entry
    const refused = await authorize(entry, request.headers.get("authorization"))
    if (refused !== undefined) return refused
    // Upstream's answer to a service root without its slash: relative links then resolve under it.
    if (parsed.rest === undefined) {
      return new Response(null, { status: 308, headers: { location: `${parsed.prefix}/${url.search}` } })
    }
    const path = (entry.configuration.stripPrefix ? parsed.rest : url.pathname) + url.search
    const limited = limiter.check(entry, parsed.rest, clientIp ?? "unknown", Date.now())
    if (limited !== undefined) return limited
    return forward(entry, request, path, { dropAuthorization: entry.configuration.auth })
  }

  const upgrade: UpgradeHandler = async (request) => {
    const url = new URL(request.url)
    const parsed = parseServicePath(url.pathname)
    if (parsed === undefined || parsed.rest === undefined) return errorJson(noRoute(`No service at ${excerpt(url.pathname, 200)}`))
    const entry = await lookup(parsed.project, parsed.run)
    if (entry instanceof Response) return entry
    const refused = await authorize(entry, request.headers.get("authorization"))
    if (refused !== undefined) return refused
    entry.metrics.request(Date.now())
    const got = await acquire(entry, Date.now() + holdTimeoutMs, undefined)
    if (got === undefined) {
      entry.metrics.errors++
      return unavailable(`No replica of service ${entry.runName} became ready within ${Math.round(holdTimeoutMs / 1000)} s`)
    }
    const { replica, host, port } = got
    const headers: Record<string, string> = {}
    request.headers.forEach((value, name) => {
      if (name === "host" || (entry.configuration.auth && name === "authorization")) return
      headers[name] = value
    })
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

  return { handle, upgrade, forward, authorizeMember, lookup }
}

/** Mounts the proxy on the app: one route for every method under `/proxy/services/`. */
export const mountServiceProxy = (app: Hono, proxy: () => Promise<ServiceProxy>, models: () => Promise<ModelRouter>): void => {
  app.all("/proxy/services/*", async (c: HonoContext) => (await proxy()).handle(c.req.raw, clientIpOf(c)))
  app.all("/proxy/models/*", async (c: HonoContext) => (await models()).handle(c.req.raw))
}

/** The caller's address: from the Node adapter's socket, or what the Deno adapter passes. */
export const clientIpOf = (c: HonoContext): string | undefined => {
  const env = c.env as { incoming?: { socket?: { remoteAddress?: string } }; remoteAddr?: string } | undefined
  return env?.incoming?.socket?.remoteAddress ?? env?.remoteAddr
}
