/**
 * The body of an attachment upload: read as plain bytes (on Node, straight from the
 * `IncomingMessage`, skipping the web-stream adapter), counted against the upload limit, with
 * read failures and the limit told apart from the blob store's own failures.
 *
 * Not `hono/body-limit`: for a body without Content-Length (chunked) that middleware reads the
 * whole body into one buffer before the handler runs, and with one it trusts the header without
 * counting the bytes; an upload here is streamed into the blob store as it arrives (up to 64 GiB
 * by default) and counted chunk by chunk, with the limit read from the server's layers.
 */
import { Context, Layer } from "effect"
import type { RouteContext } from "../../server/Route.ts"

/** The default largest attachment `PUT …/attachments/{index}` accepts: 64 GiB. */
export const DEFAULT_STACK_UPLOAD_LIMIT = 64 * 1024 ** 3

/**
 * The largest attachment, in bytes, one upload may carry. Override it by adding
 * `layerStackUploadLimit(n)` to the server's layers.
 */
export class StackUploadLimit extends Context.Reference<StackUploadLimit>()("@dstack-ts/core/stacks/StackUploadLimit", {
  defaultValue: () => DEFAULT_STACK_UPLOAD_LIMIT
}) {}

/** Sets the attachment upload limit, e.g. `layerStackUploadLimit(10 * 1024 ** 3)`. */
export const layerStackUploadLimit = (bytes: number): Layer.Layer<StackUploadLimit> => {
  if (!(Number.isSafeInteger(bytes) && bytes >= 0)) {
    throw new RangeError(`the stack upload limit must be a non-negative integer number of bytes, got ${bytes}`)
  }
  return Layer.succeed(StackUploadLimit, bytes)
}

/** A size in words: `64 GiB`, `512 MiB`, `1000 bytes`. */
export const formatBytes = (n: number): string => {
  for (const [unit, size] of [["TiB", 1024 ** 4], ["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024]] as const) {
    if (n >= size && n % size === 0) return `${n / size} ${unit}`
  }
  return `${n} bytes`
}

/** The body went past the limit (thrown from the metered body). */
export class UploadTooLarge extends Error {
  constructor(readonly limit: number) {
    super(`the attachment exceeds the upload limit of ${formatBytes(limit)}`)
  }
}

/** Reading the request body failed (the client went away, a malformed chunked body). */
export class BodyReadFailed extends Error {
  constructor(override readonly cause: unknown) {
    super(`Reading the request body failed: ${cause instanceof Error ? cause.message : String(cause)}`)
  }
}

interface NodeReadable extends AsyncIterable<Uint8Array> {
  readonly readableFlowing: boolean | null
  readonly readableDidRead?: boolean
  readonly readableEnded: boolean
  readonly destroyed: boolean
  iterator?: (options: { destroyOnReturn: boolean }) => AsyncIterator<Uint8Array>
}

/**
 * The `IncomingMessage` of @hono/node-server (`c.env.incoming`), when nothing has read from or
 * attached to it yet; `undefined` otherwise (another adapter, or the web body is in use).
 */
const untouchedIncoming = (ctx: RouteContext): NodeReadable | undefined => {
  const incoming = (ctx.hono.env as { incoming?: unknown } | undefined)?.incoming as Partial<NodeReadable> | undefined
  if (typeof incoming !== "object" || incoming === null || typeof incoming[Symbol.asyncIterator] !== "function") return undefined
  if (incoming.readableFlowing !== null || incoming.readableDidRead === true || incoming.readableEnded || incoming.destroyed) {
    return undefined
  }
  return incoming as NodeReadable
}

const webIterator = (body: ReadableStream<Uint8Array>): AsyncIterator<Uint8Array> => {
  const reader = body.getReader()
  return {
    next: () => reader.read() as Promise<IteratorResult<Uint8Array>>,
    return: async () => {
      await reader.cancel().catch(() => {})
      return { done: true, value: undefined }
    }
  }
}

/**
 * The request body as bytes, counted: past `limit` it throws `UploadTooLarge` (the rest of the
 * body is left unread for the server to discard, so that the 413 still reaches the client), and
 * a failing read throws `BodyReadFailed`.
 */
export const uploadBody = (ctx: RouteContext, limit: number): AsyncIterable<Uint8Array> => ({
  [Symbol.asyncIterator]: () => {
    const incoming = untouchedIncoming(ctx)
    let source: AsyncIterator<Uint8Array>
    if (incoming !== undefined) {
      source = typeof incoming.iterator === "function" ? incoming.iterator({ destroyOnReturn: false }) : incoming[Symbol.asyncIterator]()
    } else {
      const body = ctx.hono.req.raw.body
      source = body === null ? { next: async () => ({ done: true, value: undefined }) } : webIterator(body)
    }
    let size = 0
    const stop = () => {
      void Promise.resolve(source.return?.()).catch(() => {})
    }
    return {
      next: async () => {
        let r: IteratorResult<Uint8Array>
        try {
          r = await source.next()
        } catch (cause) {
          throw new BodyReadFailed(cause)
        }
        if (r.done !== true) {
          size += r.value.length
          if (size > limit) {
            stop()
            throw new UploadTooLarge(limit)
          }
        }
        return r
      },
      return: async () => {
        stop()
        return { done: true, value: undefined }
      }
    }
  }
})
