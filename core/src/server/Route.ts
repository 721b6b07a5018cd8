// A route of the HTTP API, declared once: method, path, who may call it, the request and
// response schemas, and its one Effect handler. The router mounts it on Hono (and answers without
// a fiber when the caches behind the handler hold all it needs); the OpenAPI document is
// generated from the same declaration.
import type { Context, Effect, Schema } from "effect"
import type { Context as HonoContext } from "hono"
import type { ApiError } from "./ApiError.ts"
import type { Principal } from "./Access.ts"
import type { ProjectRole } from "../domain/Project.ts"

export type HttpMethod = "GET" | "POST" | "PUT" | "DELETE" | "PATCH"

/**
 * Who may call a route: anyone, any signed-in user, a global admin, or a member of the
 * project named in the path with at least the given role (global admins always may).
 */
export type RouteAccess = "public" | "user" | "admin" | { readonly project: ProjectRole }

export interface RouteContext {
  readonly principal: Principal | undefined
  /** Set for `/api/project/{project_name}/…` routes. */
  readonly projectName: string | undefined
  readonly params: Readonly<Record<string, string>>
  readonly hono: HonoContext
  /**
   * A service of the server, looked up in the context the server was built with (no Effect
   * step): for handlers that can answer from a service's memory without starting a fiber.
   */
  readonly service: <I, S>(tag: Context.Tag<I, S>) => S
}

interface RouteBase {
  readonly method: HttpMethod
  /** Hono path syntax: `/api/project/:project_name/runs/get`. */
  readonly path: string
  readonly summary: string
  readonly tag: string
  readonly access: RouteAccess
}

/**
 * A response a handler already holds in wire form — what the response schema would encode to
 * (a run read from its stored JSON) — so the router sends it without encoding it again.
 */
export class Encoded<out A> {
  readonly _tag = "Encoded"
  /** `json`, when given, is `JSON.stringify(value)` made already (as text or UTF-8): it is sent as is. */
  constructor(readonly value: A, readonly json?: string | Uint8Array) {}
}

/** Wraps a value that is already the wire form of a route's response (and its JSON, if made). */
export const encoded = <A>(value: A, json?: string | Uint8Array): Encoded<A> => new Encoded(value, json)

/** A JSON-in, JSON-out route. */
export interface JsonRoute<I, II, O, OI, R> extends RouteBase {
  readonly kind: "json"
  readonly request?: Schema.Schema<I, II, never> | undefined
  readonly response: Schema.Schema<O, OI, never>
  readonly handler: (input: I, ctx: RouteContext) => Effect.Effect<O | Encoded<OI>, ApiError, R>
  /**
   * The router may answer a body it decoded lately with the input it decoded to, not decode it
   * again: for routes a client polls with the same small body (runs/get). Only for a request
   * schema that decodes the same body to the same value every time, and a handler that does
   * not change its input.
   */
  readonly rememberInputs?: boolean | undefined
}

/** A route that needs the raw request or answers with a stream (uploads, live logs). */
export interface RawRoute<R> extends RouteBase {
  readonly kind: "raw"
  readonly requestDescription?: string
  readonly responseDescription?: string
  readonly handler: (ctx: RouteContext) => Effect.Effect<Response, ApiError, R>
}

export type AnyRoute<R> = JsonRoute<any, any, any, any, R> | RawRoute<R>

/** Declares a JSON route; the types of the handler follow from the schemas. */
export const jsonRoute = <I, II, O, OI, R>(route: Omit<JsonRoute<I, II, O, OI, R>, "kind">): JsonRoute<I, II, O, OI, R> => ({
  kind: "json",
  ...route
})

/** Declares a raw route. */
export const rawRoute = <R>(route: Omit<RawRoute<R>, "kind">): RawRoute<R> => ({ kind: "raw", ...route })
