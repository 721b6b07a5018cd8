/**
 * The BlobStore port: bytes by key, streamed both ways. Stacks' attachments, code archives and
 * job artifacts live here. Core ships implementations on unstorage (core/src/blob); this module
 * holds the contract, the key rules every implementation shares, and a plain in-memory store.
 */
import { concatBytes } from "../internal/bytes.ts"
import { Chunk, Clock, Context, Effect, Layer, Option, Predicate, Ref, Schema, Stream } from "effect"

// ---------------------------------------------------------------------------------------------
// Errors

/** Why a blob store call failed. A closed set so that callers and the server can map each one. */
export const BlobStoreErrorReason = Schema.Literal(
  "NotFound",
  "PermissionDenied",
  "Invalid",
  "Transport",
  "Timeout",
  "Unknown"
)
export type BlobStoreErrorReason = typeof BlobStoreErrorReason.Type

/**
 * The one error of the BlobStore port.
 * - `NotFound`: no value under the key (or it vanished while being read).
 * - `PermissionDenied`: the storage refused access (file mode, bucket policy, credentials).
 * - `Invalid`: a bad key or prefix, or a stored manifest that cannot be read.
 * - `Transport`: the storage could not be reached (network, connection reset); worth retrying.
 * - `Timeout`: the storage did not answer in time; worth retrying.
 * - `Unknown`: anything else, with the foreign error kept in `cause`.
 */
export class BlobStoreError extends Schema.TaggedError<BlobStoreError>("@dstack-ts/core/BlobStore/BlobStoreError")(
  "BlobStoreError",
  {
    module: Schema.String,
    method: Schema.String,
    reason: BlobStoreErrorReason,
    key: Schema.optional(Schema.String),
    message: Schema.optional(Schema.String),
    cause: Schema.optional(Schema.Defect)
  }
) {
  /** True for failures that may pass when tried again unchanged. */
  get isRetryable(): boolean {
    return isRetryable(this)
  }
}

/** True for failures that may pass when tried again unchanged (`Transport`, `Timeout`). */
export const isRetryable = (error: BlobStoreError): boolean =>
  error.reason === "Transport" || error.reason === "Timeout"

/** Builds a failed effect; `message` should read as a sentence a user can act on. */
export const fail = (
  module: string,
  method: string,
  reason: BlobStoreErrorReason,
  message: string,
  extra: { readonly key?: string; readonly cause?: unknown } = {}
): Effect.Effect<never, BlobStoreError> =>
  Effect.fail(
    new BlobStoreError({
      module,
      method,
      reason,
      message,
      ...(extra.key === undefined ? {} : { key: extra.key }),
      ...(extra.cause === undefined ? {} : { cause: extra.cause })
    })
  )

// ---------------------------------------------------------------------------------------------
// Keys

const MAX_KEY_LENGTH = 1024
// `:` is unstorage's separator, `$` is reserved for implementations' own items (manifests),
// `?` and `#` break URL-based drivers, `\` is a separator on Windows.
const FORBIDDEN = /[\u0000-\u001f\u007f\\:?#*$"<>|]/

const keyProblem = (key: unknown, isPrefix: boolean): string | undefined => {
  if (typeof key !== "string") return `must be a string, got ${key === null ? "null" : typeof key}`
  if (key === "") return isPrefix ? undefined : "must not be empty"
  if (key.length > MAX_KEY_LENGTH) return `is ${key.length} characters long, the limit is ${MAX_KEY_LENGTH}`
  if (key.startsWith("/")) return "must not start with '/'"
  const bad = FORBIDDEN.exec(key)
  if (bad) return `must not contain ${JSON.stringify(bad[0])}`
  const body = isPrefix && key.endsWith("/") ? key.slice(0, -1) : key
  if (body.endsWith("/")) return "must not end with '/'"
  for (const segment of body.split("/")) {
    if (segment === "") return "must not contain an empty segment ('//')"
    if (segment === "..") return "must not contain a '..' segment"
    if (segment === ".") return "must not contain a '.' segment"
  }
  return undefined
}

/**
 * Checks a key against the rules every store shares: a non-empty `/`-separated path of at most
 * 1024 characters, no leading or trailing `/`, no empty, `.` or `..` segments, and none of
 * `\ : ? # * $ " < > |` or control characters. Fails with `Invalid` naming the problem.
 */
export const validateKey = (module: string, method: string, key: string): Effect.Effect<string, BlobStoreError> => {
  const problem = keyProblem(key, false)
  return problem === undefined
    ? Effect.succeed(key)
    : fail(module, method, "Invalid", `blob key ${JSON.stringify(key)} ${problem}`, { key: String(key) })
}

/** Like `validateKey` for a listing prefix: it may be empty and may end with `/`. */
export const validatePrefix = (
  module: string,
  method: string,
  prefix: string
): Effect.Effect<string, BlobStoreError> => {
  const problem = keyProblem(prefix, true)
  return problem === undefined
    ? Effect.succeed(prefix)
    : fail(module, method, "Invalid", `blob prefix ${JSON.stringify(prefix)} ${problem}`, { key: String(prefix) })
}

// ---------------------------------------------------------------------------------------------
// Data

/** What a store knows about a value without reading its bytes. */
export const BlobStat = Schema.Struct({
  key: Schema.String,
  /** Size in bytes. */
  size: Schema.Number,
  /** SHA-256 of the bytes, lowercase hex. */
  digest: Schema.String,
  contentType: Schema.optional(Schema.String),
  metadata: Schema.Record({ key: Schema.String, value: Schema.String }),
  /** When the value was written, in epoch milliseconds (from the Effect `Clock`). */
  updatedAt: Schema.Number
})
export type BlobStat = typeof BlobStat.Type

/** What `put` answers once the value is visible to readers. */
export interface PutResult {
  readonly key: string
  readonly size: number
  readonly digest: string
}

export interface PutOptions {
  /** A MIME type stored with the value, e.g. `application/vnd.apache.arrow.stream`. */
  readonly contentType?: string
  /** Small string facts stored with the value (never the bytes themselves). */
  readonly metadata?: Readonly<Record<string, string>>
}

/** A stored value: its stat, read eagerly, and its bytes, read lazily as they are pulled. */
export interface Blob {
  readonly stat: BlobStat
  readonly body: Stream.Stream<Uint8Array, BlobStoreError>
}

/**
 * What `put` accepts: whole bytes, a UTF-8 string, an Effect stream (its error passes through
 * `put` unchanged), a web `ReadableStream` or an async iterable of bytes such as a Node
 * `Readable` (their errors become an `Unknown` BlobStoreError whose `cause` is the original).
 */
export type Body<E = never> =
  | Uint8Array
  | string
  | Stream.Stream<Uint8Array, E>
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array>

/**
 * A body read with plain promises, one piece at a time: what `Implementation.putPieces`
 * consumes, so that a large upload costs no Effect per piece. `next` rejects only with a
 * BlobStoreError (`Unknown` with the source's error as `cause`, or `Invalid` for a piece that
 * is not bytes).
 */
export interface Pieces {
  /** The next piece (never empty), or `undefined` at the end. */
  readonly next: () => Promise<Uint8Array | undefined>
  /** Stops the source early (after a failure or an interruption); safe to call twice. */
  readonly cancel: () => void
}

// ---------------------------------------------------------------------------------------------
// The port

export const TypeId: unique symbol = Symbol.for("@dstack-ts/core/BlobStore")
export type TypeId = typeof TypeId

/**
 * A blob store. Keys are checked by `validateKey` before any implementation sees them.
 *
 * @example
 * const program = Effect.gen(function*() {
 *   const store = yield* BlobStore.BlobStore
 *   const { digest } = yield* store.put("stacks/alice/mnist/frame-1/0", bytes, { contentType: "image/png" })
 *   const back = yield* store.getBytes("stacks/alice/mnist/frame-1/0")
 * })
 */
export interface BlobStore {
  readonly [TypeId]: TypeId
  /**
   * Who sees the values: `process` (this process only: memory), `host` (processes on this
   * machine: a local directory) or `shared` (every server that connects: Redis, S3). A server
   * whose state store is shared refuses a blob store that is not (see `createServer`'s
   * `allowLocalBlobs`); undefined when the implementation does not say.
   */
  readonly reach?: StoreReach
  /** Stores a value; it becomes visible to readers only when complete. Overwrites. */
  readonly put: <E = never>(
    key: string,
    body: Body<E>,
    options?: PutOptions
  ) => Effect.Effect<PutResult, BlobStoreError | E>
  /** Opens a value: fails with `NotFound` at once when there is none, streams the bytes lazily. */
  readonly get: (key: string) => Effect.Effect<Blob, BlobStoreError>
  /** The bytes of a value as a stream; a missing key fails the stream with `NotFound`. */
  readonly stream: (key: string) => Stream.Stream<Uint8Array, BlobStoreError>
  /** The whole value in memory: for small values only. */
  readonly getBytes: (key: string) => Effect.Effect<Uint8Array, BlobStoreError>
  /** The stat of a value; `NotFound` when there is none. */
  readonly stat: (key: string) => Effect.Effect<BlobStat, BlobStoreError>
  readonly has: (key: string) => Effect.Effect<boolean, BlobStoreError>
  /**
   * The keys that start with `prefix` (a plain string prefix: `runs/a` matches `runs/abc/x`),
   * sorted. The empty prefix lists everything.
   */
  readonly list: (prefix?: string) => Stream.Stream<string, BlobStoreError>
  /** Removes a value; removing a missing key succeeds. */
  readonly delete: (key: string) => Effect.Effect<void, BlobStoreError>
}

/** Who sees what a store holds: this process, processes on this machine, or every server that connects. */
export type StoreReach = "process" | "host" | "shared"

/** The tag of the BlobStore service (same name as the interface, as in `@effect/platform`). */
export const BlobStore: Context.Tag<BlobStore, BlobStore> = Context.GenericTag<BlobStore>("@dstack-ts/core/BlobStore")

/**
 * The small core an implementation writes; `make` adds key checks, body normalisation and the
 * derived methods. Keys and prefixes reaching it are already valid.
 */
export interface Implementation {
  /** Names the implementation in errors, e.g. `BlobStore/unstorage`. */
  readonly module: string
  /** Who sees the values (see `BlobStore.reach`). */
  readonly reach?: StoreReach
  readonly put: <E>(
    key: string,
    body: Stream.Stream<Uint8Array, E>,
    options: PutOptions
  ) => Effect.Effect<PutResult, BlobStoreError | E>
  /**
   * Optional fast path for bodies that are not Effect streams (bytes, strings, web
   * `ReadableStream`s, async iterables): the same contract as `put`, the body read as plain
   * promises. When absent, every body goes through `put` as a stream.
   */
  readonly putPieces?: (key: string, body: Pieces, options: PutOptions) => Effect.Effect<PutResult, BlobStoreError>
  readonly get: (key: string) => Effect.Effect<Blob, BlobStoreError>
  readonly stat: (key: string) => Effect.Effect<BlobStat, BlobStoreError>
  readonly has?: (key: string) => Effect.Effect<boolean, BlobStoreError>
  readonly list: (prefix: string) => Stream.Stream<string, BlobStoreError>
  readonly delete: (key: string) => Effect.Effect<void, BlobStoreError>
}

const readFailed = (module: string, cause: unknown) =>
  new BlobStoreError({
    module,
    method: "put",
    reason: "Unknown",
    message: `reading the body failed: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause
  })

const notBytes = (module: string, piece: unknown) =>
  new BlobStoreError({
    module,
    method: "put",
    reason: "Invalid",
    message: `the body yielded ${piece === null ? "null" : typeof piece}, not bytes (Uint8Array)`
  })

const isAsyncIterable = (body: unknown): body is AsyncIterable<unknown> =>
  typeof body === "object" && body !== null && typeof (body as { [Symbol.asyncIterator]?: unknown })[Symbol.asyncIterator] === "function"

/**
 * A body as `Pieces`, or `undefined` for an Effect stream (whose typed error must pass through
 * unchanged, so it stays a stream) and for anything that is no body. Nothing is read until
 * `next` is called.
 */
export const bodyPieces = <E>(module: string, body: Body<E>): Pieces | undefined => {
  if (typeof body === "string" || body instanceof Uint8Array) {
    let whole: Uint8Array | undefined = typeof body === "string" ? new TextEncoder().encode(body) : body
    return {
      next: () => {
        const out = whole !== undefined && whole.length > 0 ? whole : undefined
        whole = undefined
        return Promise.resolve(out)
      },
      cancel: () => {
        whole = undefined
      }
    }
  }
  if (typeof body !== "object" || body === null || Stream.StreamTypeId in body) return undefined
  let pull: () => Promise<{ done?: boolean | undefined; value?: unknown }>
  let stop: () => unknown
  if (Predicate.hasProperty(body, "getReader")) {
    const web = body as ReadableStream<Uint8Array>
    let reader: ReadableStreamDefaultReader<Uint8Array> | undefined
    pull = () => (reader ??= web.getReader()).read()
    stop = () => (reader === undefined ? web.cancel() : reader.cancel())
  } else if (isAsyncIterable(body)) {
    let iterator: AsyncIterator<unknown> | undefined
    pull = () => (iterator ??= body[Symbol.asyncIterator]()).next()
    stop = () => iterator?.return?.()
  } else {
    return undefined
  }
  let done = false
  const cancel = () => {
    if (done) return
    done = true
    try {
      Promise.resolve(stop()).catch(() => {})
    } catch {
      // a source that cannot be stopped is left to the garbage collector
    }
  }
  const next = async (): Promise<Uint8Array | undefined> => {
    for (;;) {
      if (done) return undefined
      let r: { done?: boolean | undefined; value?: unknown }
      try {
        r = await pull()
      } catch (cause) {
        done = true
        throw readFailed(module, cause)
      }
      if (r.done) {
        done = true
        return undefined
      }
      if (!(r.value instanceof Uint8Array)) {
        cancel()
        throw notBytes(module, r.value)
      }
      if (r.value.length > 0) return r.value
    }
  }
  return { next, cancel }
}

/** Turns any accepted body into a stream of bytes. */
export const bodyStream = <E>(module: string, body: Body<E>): Stream.Stream<Uint8Array, E | BlobStoreError> => {
  if (typeof body === "string") return Stream.succeed(new TextEncoder().encode(body))
  if (body instanceof Uint8Array) return body.length === 0 ? Stream.empty : Stream.succeed(body)
  if (Stream.StreamTypeId in (body as object)) return body as Stream.Stream<Uint8Array, E>
  if (Predicate.hasProperty(body, "getReader")) {
    return Stream.fromReadableStream({
      evaluate: () => body as ReadableStream<Uint8Array>,
      onError: (cause) => readFailed(module, cause)
    })
  }
  if (isAsyncIterable(body)) {
    return Stream.fromAsyncIterable(body, (cause) => readFailed(module, cause)).pipe(
      Stream.mapEffect((piece) => (piece instanceof Uint8Array ? Effect.succeed(piece) : Effect.fail(notBytes(module, piece))))
    )
  }
  return Stream.fail(
    new BlobStoreError({
      module,
      method: "put",
      reason: "Invalid",
      message: "the body must be a Uint8Array, a string, an Effect Stream, a ReadableStream or an async iterable of bytes"
    })
  )
}

/** Concatenates byte chunks into one array. */
export { concatBytes }

/** Builds the full service from an implementation's small core. */
export const make = (impl: Implementation): BlobStore => {
  const m = impl.module
  const get = (key: string) => Effect.flatMap(validateKey(m, "get", key), impl.get)
  const has = impl.has ?? ((key: string) =>
    impl.stat(key).pipe(
      Effect.as(true),
      Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(false))
    ))
  return {
    [TypeId]: TypeId,
    ...(impl.reach === undefined ? {} : { reach: impl.reach }),
    put: (key, body, options = {}) =>
      Effect.flatMap(validateKey(m, "put", key), (k) => {
        const pieces = impl.putPieces === undefined ? undefined : bodyPieces(m, body)
        return pieces !== undefined ? impl.putPieces!(k, pieces, options) : impl.put(k, bodyStream(m, body), options)
      }),
    get,
    stream: (key) => Stream.unwrap(Effect.map(get(key), (blob) => blob.body)),
    getBytes: (key) =>
      Effect.flatMap(get(key), (blob) =>
        Effect.map(Stream.runCollect(blob.body), (chunks) => concatBytes(Chunk.toReadonlyArray(chunks)))),
    stat: (key) => Effect.flatMap(validateKey(m, "stat", key), impl.stat),
    has: (key) => Effect.flatMap(validateKey(m, "has", key), has),
    list: (prefix = "") => Stream.unwrap(Effect.map(validatePrefix(m, "list", prefix), impl.list)),
    delete: (key) => Effect.flatMap(validateKey(m, "delete", key), impl.delete)
  }
}

// ---------------------------------------------------------------------------------------------
// In memory

/** SHA-256 as lowercase hex, through Web Crypto (available on Node ≥ 20 and Deno). */
export const sha256Hex = (bytes: Uint8Array): Effect.Effect<string> =>
  Effect.promise(async () => {
    const digest = new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>))
    let hex = ""
    for (const b of digest) hex += b.toString(16).padStart(2, "0")
    return hex
  })

interface MemoryEntry {
  readonly stat: BlobStat
  readonly bytes: Uint8Array
}

/**
 * A store in a `Map`: whole values in memory, for tests and throwaway programs. Bodies are
 * collected before they become visible, so a failing body stream leaves nothing behind.
 */
export const makeMemory: Effect.Effect<BlobStore> = Effect.map(
  Ref.make(new Map<string, MemoryEntry>()),
  (ref) => {
    const module = "BlobStore/memory"
    const notFound = (method: string, key: string) =>
      fail(module, method, "NotFound", `no blob under key ${JSON.stringify(key)}`, { key })
    const lookup = (method: string, key: string) =>
      Effect.flatMap(Ref.get(ref), (map) => {
        const entry = map.get(key)
        return entry ? Effect.succeed(entry) : notFound(method, key)
      })
    return make({
      module,
      reach: "process",
      put: (key, body, options) =>
        Effect.gen(function*() {
          const chunks = yield* Stream.runCollect(body)
          const bytes = concatBytes(Chunk.toReadonlyArray(chunks)).slice()
          const digest = yield* sha256Hex(bytes)
          const updatedAt = yield* Clock.currentTimeMillis
          const stat: BlobStat = {
            key,
            size: bytes.length,
            digest,
            ...(options.contentType === undefined ? {} : { contentType: options.contentType }),
            metadata: { ...options.metadata },
            updatedAt
          }
          yield* Ref.update(ref, (map) => new Map(map).set(key, { stat, bytes }))
          return { key, size: bytes.length, digest }
        }),
      get: (key) =>
        Effect.map(lookup("get", key), (entry) => ({
          stat: entry.stat,
          body: entry.bytes.length === 0 ? Stream.empty : Stream.succeed(entry.bytes.slice())
        })),
      stat: (key) => Effect.map(lookup("stat", key), (entry) => entry.stat),
      list: (prefix) =>
        Stream.unwrap(
          Effect.map(Ref.get(ref), (map) =>
            Stream.fromIterable([...map.keys()].filter((k) => k.startsWith(prefix)).sort()))
        ),
      delete: (key) =>
        Ref.update(ref, (map) => {
          if (!map.has(key)) return map
          const next = new Map(map)
          next.delete(key)
          return next
        })
    })
  }
)

/** A fresh in-memory store per layer build. */
export const layerMemory: Layer.Layer<BlobStore> = Layer.effect(BlobStore, makeMemory)

/** `Option` of a value's stat, `None` when missing: a convenience over `stat`. */
export const statOption = (
  store: BlobStore,
  key: string
): Effect.Effect<Option.Option<BlobStat>, BlobStoreError> =>
  store.stat(key).pipe(
    Effect.map(Option.some),
    Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(Option.none()))
  )
