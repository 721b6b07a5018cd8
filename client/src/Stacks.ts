/**
 * Stacks in the SDK (upstream `dstack.push`, `dstack.pull`, `dstack.frame`): encode objects
 * with the AutoHandler, push them as a frame (create → streamed upload per attachment →
 * commit), and pull them back decoded. Promise API over `fetch` only, so it runs in a browser.
 *
 * @example
 * import dataframe from "@dstack-ts/handler-dataframe"
 * const stacks = client.stacks({ codecs: dataframe.codecs })
 * const { url } = await stacks.push("sales/weekly", table, { message: "week 12", params: { region: "eu" } })
 * const back = await stacks.pull("sales/weekly", { params: { region: "eu" } })
 *
 * The deprecated upstream names (`push_frame`, `create_frame`, `commit`) are left out.
 */
import { Cause, Effect, Exit, Option, Schema, Stream } from "effect"
import { Codec } from "@dstack-ts/core/wire"
import { configFileReader } from "./Platform.ts"
import { AutoHandler } from "@dstack-ts/core/wire"
import { formatStackPath, isStackAccess, resolveStackPath } from "@dstack-ts/core/wire"
import type { StackAccess, StackPath } from "@dstack-ts/core/wire"
import { ClientError, reasonOfStatus, WireErrorDetail } from "./ClientError.ts"
import type { ClientErrorDetail } from "./ClientError.ts"
import { normalizeUrl } from "./ClientConfig.ts"

/** Where a profile points: a server and a user's token (none: anonymous reads of public stacks). */
export interface StackProfile {
  readonly url: string
  readonly token?: string | undefined
}

export interface StacksOptions extends StackProfile {
  /** The installed codecs (handler plugins' `codecs`), tried before core's bytes/text/JSON. */
  readonly codecs?: ReadonlyArray<Codec.Any> | undefined
  readonly fetch?: typeof globalThis.fetch | undefined
  /**
   * Resolves a named profile (`profile` option): by default a profile is a project of the
   * client config (`~/.dstack/config.yml`: name, url, token); `default` is this one.
   */
  readonly resolveProfile?: ((name: string) => Promise<StackProfile>) | undefined
}

export interface PushOptions {
  /** Describes the object (upstream `description`). */
  readonly description?: string | undefined
  /** `public` or `private`; default: the user's default (private unless changed). */
  readonly access?: StackAccess | undefined
  /** What is new in this revision. */
  readonly message?: string | undefined
  /** The params this object answers to on a pull, and shown as widgets in the viewer. */
  readonly params?: Readonly<Record<string, unknown>> | undefined
  /** Use this codec instead of the AutoHandler's choice. */
  readonly encoder?: Codec.Any | undefined
  /** A named profile instead of this client's server and token. */
  readonly profile?: string | undefined
}

export interface PushResult {
  readonly frameId: string
  /** The stack's page in the viewer. */
  readonly url: string
}

export interface PullOptions {
  /** Pick the first attachment whose params include these. */
  readonly params?: Readonly<Record<string, unknown>> | undefined
  readonly decoder?: Codec.Any | undefined
  readonly profile?: string | undefined
  /** A given frame instead of the head. */
  readonly frameId?: string | undefined
}

export interface FrameOptions {
  readonly access?: StackAccess | undefined
  readonly profile?: string | undefined
}

export interface AddOptions {
  readonly description?: string | undefined
  readonly params?: Readonly<Record<string, unknown>> | undefined
  readonly encoder?: Codec.Any | undefined
}

/** An attachment as the server describes it. */
export interface AttachmentInfo {
  readonly index: number
  readonly description: string | null
  readonly params: Record<string, unknown>
  readonly content_type: string
  readonly application: string
  readonly metadata: Record<string, unknown>
  readonly size: number | null
}

export interface FrameInfo {
  readonly id: string
  readonly message: string | null
  readonly params: Record<string, unknown>
  readonly created_by: string
  readonly created_at: string
  readonly committed_at: string | null
  readonly attachments: ReadonlyArray<AttachmentInfo>
}

export interface StackSummary {
  readonly stack: string
  readonly owner: string
  readonly name: string
  readonly access: StackAccess
  readonly head: string | null
  readonly updated_at: string
}

export interface StackInfo extends StackSummary {
  readonly head_frame: FrameInfo | null
  readonly frames: ReadonlyArray<FrameInfo>
}

/** A pulled attachment before decoding: its description and a streamed body. */
export interface RawPull {
  readonly stack: string
  readonly frameId: string
  readonly attachment: AttachmentInfo
  readonly response: Response
}

/** A frame being assembled (upstream `StackFrame`): `add` objects, then `push` once. */
export interface StackFrame {
  add(obj: unknown, options?: AddOptions): Promise<StackFrame>
  push(message?: string): Promise<PushResult>
}

export interface Stacks {
  push(stack: string, obj: unknown, options?: PushOptions): Promise<PushResult>
  pull(stack: string, options?: PullOptions): Promise<unknown>
  frame(stack: string, options?: FrameOptions): StackFrame
  /** The attachment a pull would get, undecoded (for files and large objects: stream `response.body`). */
  pullRaw(stack: string, options?: Omit<PullOptions, "decoder">): Promise<RawPull>
  get(stack: string, options?: { readonly profile?: string }): Promise<StackInfo>
  list(options?: { readonly profile?: string }): Promise<ReadonlyArray<StackSummary>>
  delete(stack: string, options?: { readonly profile?: string }): Promise<void>
  /** Where a stack name resolves to for this client's user (`name` → `user/name`). */
  resolve(stack: string, options?: { readonly profile?: string }): Promise<string>
}

const MODULE = "Stacks"

/** Whole-bytes bodies above this go out as a stream of slices of the caller's array. */
const STREAM_UPLOAD_FROM = 1024 * 1024
const SLICE = 8 * 1024 * 1024

/**
 * fetch copies a whole-bytes body before sending it; a stream of slices of the same array is
 * sent without that copy. Browsers (pages and workers) accept streamed request bodies only
 * over HTTP/2, so only Node and Deno stream.
 */
const canStreamUploads = (): boolean => {
  const g = globalThis as { process?: { versions?: { node?: unknown } }; Deno?: unknown }
  return typeof g.process?.versions?.node === "string" || g.Deno !== undefined
}

/** The caller's bytes as a stream of views (no copy); the array must not change meanwhile. */
const sliced = (bytes: Uint8Array): ReadableStream<Uint8Array> => {
  let at = 0
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) return controller.close()
      controller.enqueue(bytes.subarray(at, Math.min(bytes.length, at + SLICE)))
      at += SLICE
    }
  })
}

/**
 * A response body in one array. With a content-length the array is allocated once and filled
 * as the bytes arrive (one copy, and half the memory of collecting pieces then concatenating).
 */
const readBody = async (response: Response, invalid: (msg: string) => Error): Promise<Uint8Array> => {
  const declared = Number(response.headers.get("content-length") ?? Number.NaN)
  if (response.body === null) return new Uint8Array(0)
  if (!Number.isSafeInteger(declared) || declared < 0) return new Uint8Array(await response.arrayBuffer())
  const out = new Uint8Array(declared)
  const reader = response.body.getReader()
  let at = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    if (at + value.length > declared) {
      await reader.cancel().catch(() => {})
      throw invalid(`the server sent more than the ${declared} bytes it announced`)
    }
    out.set(value, at)
    at += value.length
  }
  if (at !== declared) throw invalid(`the download ended after ${at} of ${declared} bytes`)
  return out
}

const run = async <A, E>(effect: Effect.Effect<A, E>): Promise<A> => {
  const exit = await Effect.runPromiseExit(effect)
  if (Exit.isSuccess(exit)) return exit.value
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure)) throw failure.value
  throw Cause.squash(exit.cause)
}

interface Pending {
  readonly encoded: AutoHandler.Encoded
  readonly description: string | undefined
  readonly params: Readonly<Record<string, unknown>>
}

/** Builds the stacks API on a server and token. */
export const make = (options: StacksOptions): Stacks => {
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis)
  const auto = AutoHandler.make(options.codecs ?? [])
  const users = new Map<string, Promise<string | undefined>>()

  const err = (method: string, url: string, reason: ClientError["reason"], msg: string, extra: Partial<ConstructorParameters<typeof ClientError>[0]> = {}) =>
    new ClientError({ module: MODULE, method, reason, url, msg, ...extra })

  const profileOf = async (name: string | undefined): Promise<StackProfile> => {
    if (name === undefined || name === "default") return { url: normalizeUrl(options.url), token: options.token }
    if (options.resolveProfile === undefined) {
      throw err("profile", options.url, "Invalid", `Unknown profile ${JSON.stringify(name)}: this client has no profile resolver`)
    }
    const p = await options.resolveProfile(name)
    return { url: normalizeUrl(p.url), token: p.token }
  }

  const call = async (method: string, profile: StackProfile, path: string, init: RequestInit & { duplex?: "half" } = {}): Promise<Response> => {
    const headers: Record<string, string> = { accept: "application/json", ...(init.headers as Record<string, string> | undefined) }
    if (profile.token) headers.authorization = `Bearer ${profile.token}`
    let response: Response
    try {
      response = await fetchImpl(profile.url + path, { ...init, headers })
    } catch (cause) {
      throw err(method, profile.url, "Unreachable", `cannot reach the dstack server at ${profile.url}: ${(cause as Error)?.message ?? String(cause)}`, { cause })
    }
    if (response.ok) return response
    const text = await response.text().catch(() => "")
    let details: ReadonlyArray<ClientErrorDetail> = []
    try {
      const body = JSON.parse(text) as { detail?: unknown }
      details = Array.isArray(body.detail) ? Schema.decodeUnknownSync(Schema.Array(WireErrorDetail))(body.detail) : []
    } catch {
      // not JSON: reported by status
    }
    const first = details[0]
    throw err(method, profile.url, reasonOfStatus(response.status, first?.code), first?.msg ?? `HTTP ${response.status}${text ? `: ${text.slice(0, 200)}` : ""}`, {
      status: response.status,
      ...(first ? { code: first.code, details } : {}),
      ...(first?.loc ? { loc: first.loc } : {})
    })
  }

  const postJson = async <A>(method: string, profile: StackProfile, path: string, body: unknown): Promise<A> => {
    const response = await call(method, profile, path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
    return (await response.json()) as A
  }

  const userOf = (profile: StackProfile): Promise<string | undefined> => {
    if (!profile.token) return Promise.resolve(undefined)
    const k = `${profile.url} ${profile.token}`
    let hit = users.get(k)
    if (hit === undefined) {
      hit = postJson<{ username: string }>("users.getMyUser", profile, "/api/users/get_my_user", {}).then((u) => u.username)
      hit.catch(() => users.delete(k))
      users.set(k, hit)
    }
    return hit
  }

  /** Checks the name first (no network for a bad one), then resolves a relative name. */
  const pathOf = async (method: string, stack: string, profile: StackProfile): Promise<StackPath> => {
    const early = resolveStackPath(stack, "_")
    if (typeof early === "string") throw err(method, profile.url, "Invalid", early)
    if (stack.startsWith("/")) return early
    const resolved = resolveStackPath(stack, await userOf(profile))
    if (typeof resolved === "string") throw err(method, profile.url, "Invalid", resolved)
    return resolved
  }

  const encode = (obj: unknown, encoder: Codec.Any | undefined) => run(auto.encode(obj, encoder ? { encoder } : {}))

  const upload = (profile: StackProfile, frameId: string, index: number, body: Codec.Body) =>
    call("stacks.upload", profile, `/api/stacks/frames/${encodeURIComponent(frameId)}/attachments/${index}`, {
      method: "PUT",
      headers: {
        "content-type": "application/octet-stream",
        // Lets the server refuse an attachment past its limit before any byte is sent.
        ...(body instanceof Uint8Array ? { "content-length": String(body.length) } : {})
      },
      ...(body instanceof Uint8Array && !(body.length > STREAM_UPLOAD_FROM && canStreamUploads())
        ? { body: body as Uint8Array<ArrayBuffer> }
        : { body: body instanceof Uint8Array ? sliced(body) : Stream.toReadableStream(body), duplex: "half" as const })
    })

  const pushFrame = async (stack: string, pending: ReadonlyArray<Pending>, settings: { access?: StackAccess | undefined; message?: string | undefined; profile?: string | undefined }): Promise<PushResult> => {
    const profile = await profileOf(settings.profile)
    if (settings.access !== undefined && !isStackAccess(settings.access)) {
      throw err("stacks.push", profile.url, "Invalid", `access must be "public" or "private", not ${JSON.stringify(settings.access)}`)
    }
    const path = await pathOf("stacks.push", stack, profile)
    if (pending.length === 0) throw err("stacks.push", profile.url, "Invalid", "A frame needs at least one object: call add() before push()")
    const created = await postJson<{ frame_id: string }>("stacks.push", profile, "/api/stacks/frames/create", {
      stack: formatStackPath(path),
      ...(settings.access !== undefined ? { access: settings.access } : {}),
      ...(settings.message !== undefined ? { message: settings.message } : {}),
      attachments: pending.map((p) => ({
        description: p.description ?? null,
        params: p.params,
        content_type: p.encoded.contentType,
        application: p.encoded.application,
        metadata: p.encoded.metadata
      }))
    })
    for (const [i, p] of pending.entries()) await upload(profile, created.frame_id, i, p.encoded.body)
    const committed = await postJson<{ frame_id: string; url: string }>("stacks.push", profile, "/api/stacks/frames/commit", {
      frame_id: created.frame_id,
      ...(settings.message !== undefined ? { message: settings.message } : {})
    })
    return { frameId: committed.frame_id, url: committed.url }
  }

  const pullRaw: Stacks["pullRaw"] = async (stack, pullOptions = {}) => {
    const profile = await profileOf(pullOptions.profile)
    const path = await pathOf("stacks.pull", stack, profile)
    const chosen = await postJson<{ stack: string; frame_id: string; attachment: AttachmentInfo; download_path: string }>(
      "stacks.pull",
      profile,
      "/api/stacks/pull",
      { stack: formatStackPath(path), ...(pullOptions.frameId ? { frame_id: pullOptions.frameId } : {}), params: pullOptions.params ?? {} }
    )
    const response = await call("stacks.pull", profile, chosen.download_path, { method: "GET" })
    return { stack: chosen.stack, frameId: chosen.frame_id, attachment: chosen.attachment, response }
  }

  const api: Stacks = {
    push: (stack, obj, o = {}) =>
      encode(obj, o.encoder).then((encoded) =>
        pushFrame(stack, [{ encoded, description: o.description, params: o.params ?? {} }], { access: o.access, message: o.message, profile: o.profile })
      ),
    pull: async (stack, o = {}) => {
      const raw = await pullRaw(stack, o)
      const body = await readBody(raw.response, (msg) => err("stacks.pull", raw.response.url, "BadResponse", msg))
      return run(
        auto.decode(
          { contentType: raw.attachment.content_type, application: raw.attachment.application, metadata: raw.attachment.metadata as Codec.Metadata, body },
          o.decoder ? { decoder: o.decoder } : {}
        )
      )
    },
    frame: (stack, o = {}) => {
      const pending: Array<Pending> = []
      let pushed = false
      const frame: StackFrame = {
        add: async (obj, a = {}) => {
          if (pushed) throw err("stacks.frame", options.url, "Invalid", "This frame is already pushed: start a new one with frame()")
          pending.push({ encoded: await encode(obj, a.encoder), description: a.description, params: a.params ?? {} })
          return frame
        },
        push: async (message) => {
          if (pushed) throw err("stacks.frame", options.url, "Invalid", "This frame is already pushed: start a new one with frame()")
          const result = await pushFrame(stack, pending, { access: o.access, message, profile: o.profile })
          pushed = true
          return result
        }
      }
      return frame
    },
    pullRaw,
    get: async (stack, o = {}) => {
      const profile = await profileOf(o.profile)
      const path = await pathOf("stacks.get", stack, profile)
      return postJson<StackInfo>("stacks.get", profile, "/api/stacks/get", { stack: formatStackPath(path) })
    },
    list: async (o = {}) => {
      const profile = await profileOf(o.profile)
      return (await postJson<{ stacks: ReadonlyArray<StackSummary> }>("stacks.list", profile, "/api/stacks/list", {})).stacks
    },
    delete: async (stack, o = {}) => {
      const profile = await profileOf(o.profile)
      const path = await pathOf("stacks.delete", stack, profile)
      await postJson("stacks.delete", profile, "/api/stacks/delete", { stack: formatStackPath(path) })
    },
    resolve: async (stack, o = {}) => formatStackPath(await pathOf("stacks.resolve", stack, await profileOf(o.profile)))
  }
  return api
}

/**
 * Profiles from the client config: a profile is a project entry of `~/.dstack/config.yml`
 * (`name`, `url`, `token`), so `profile: "work"` uses the `work` project's server and token.
 * Node/Deno only (reads the file).
 */
export const configProfiles = (configPath?: string) => async (name: string): Promise<StackProfile> => {
  const resolveFromConfigFile = configFileReader()
  const project = await run(resolveFromConfigFile({ projectName: name, ...(configPath ? { configPath } : {}) }, { HOME: (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.HOME }))
  return { url: project.url, token: project.token }
}
