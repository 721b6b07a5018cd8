/**
 * A BlobStore on any unstorage driver (memory, fs, redis, s3 …). unstorage moves whole values,
 * so a blob is stored as fixed-size chunks plus a small JSON manifest: memory stays bounded by a
 * few chunks whatever the size and the driver (a writer holds the chunk it fills and two being
 * written, a reader the one it hands out), and a value becomes visible only when
 * its manifest is written.
 *
 * Layout inside the storage:
 *   m:<key with / as :>$m           the manifest (size, digest, content type, metadata, chunks)
 *   c:<gg>:<generation>.<n>         chunk n of one write (gg: the generation's first 2 characters)
 * `$` cannot appear in keys, so a manifest never collides with a directory of longer keys, and
 * every write has its own generation, so an overwrite never mixes chunks of two writes.
 */
import { Clock, Effect, Exit, Layer, Schema, Stream } from "effect"
import { createStorage, type Driver, type Storage } from "unstorage"
import memoryDriver from "unstorage/drivers/memory"
import { BlobStore, configDecoder } from "@dstack-ts/core"
import { S3RequestError, s3Driver, type S3DriverOptions } from "./S3Driver.ts"

const MODULE = "BlobStore/unstorage"

/** 8 MiB: large enough for throughput on object stores, small enough to bound memory. */
export const DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024

export interface UnstorageBlobStoreOptions {
  /** The unstorage driver that holds manifests and chunks, e.g. `redisDriver({ base: "blobs" })`. */
  readonly driver: Driver
  /** Bytes per stored chunk (default 8 MiB). Writers hold at most three, readers one at a time. */
  readonly chunkSize?: number
  /** Who sees the values (`BlobStore.reach`): `shared` for a driver that several servers reach. */
  readonly reach?: BlobStore.StoreReach
}

export interface FsOptions {
  /** The directory that holds the store; created on the first write. */
  readonly base: string
  /** Bytes per stored chunk (default 8 MiB). */
  readonly chunkSize?: number
}

export interface MemoryOptions {
  /** Bytes per stored chunk (default 8 MiB); tests use small sizes to exercise many chunks. */
  readonly chunkSize?: number
}

/**
 * An S3-compatible object store (AWS S3, MinIO, Ceph, R2 …), shared by every server that uses
 * the same bucket. The names are those of unstorage's `s3` driver.
 */
export interface S3Options extends S3DriverOptions {
  /** Bytes per stored chunk, i.e. per object (default 8 MiB). */
  readonly chunkSize?: number
}

// ---------------------------------------------------------------------------------------------
// Manifest

const Manifest = Schema.Struct({
  version: Schema.Literal(1),
  key: Schema.String,
  size: Schema.NonNegativeInt,
  digest: Schema.String,
  contentType: Schema.optional(Schema.String),
  metadata: Schema.Record({ key: Schema.String, value: Schema.String }),
  updatedAt: Schema.Number,
  generation: Schema.String,
  chunkSize: Schema.Int.pipe(Schema.positive()),
  chunks: Schema.NonNegativeInt
})
type Manifest = typeof Manifest.Type
const decodeManifest = Schema.decodeUnknown(Manifest)

const manifestKey = (key: string): string => `m:${key.replaceAll("/", ":")}$m`
const chunkKey = (generation: string, n: number): string => `c:${generation.slice(0, 2)}:${generation}.${n}`

const statOf = (m: Manifest): BlobStore.BlobStat => ({
  key: m.key,
  size: m.size,
  digest: m.digest,
  ...(m.contentType === undefined ? {} : { contentType: m.contentType }),
  metadata: m.metadata,
  updatedAt: m.updatedAt
})

// ---------------------------------------------------------------------------------------------
// Errors from the driver, mapped once here

const TRANSPORT_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "ECONNABORTED"
])

const reasonOf = (cause: unknown): BlobStore.BlobStoreErrorReason => {
  if (cause instanceof S3RequestError) return cause.reason
  const code = typeof cause === "object" && cause !== null ? (cause as { code?: unknown }).code : undefined
  if (code === "EACCES" || code === "EPERM" || code === "EROFS") return "PermissionDenied"
  if (code === "ETIMEDOUT") return "Timeout"
  if (typeof code === "string" && TRANSPORT_CODES.has(code)) return "Transport"
  return "Unknown"
}

const attempt = <A>(method: string, key: string, f: () => Promise<A>): Effect.Effect<A, BlobStore.BlobStoreError> =>
  Effect.tryPromise({ try: f, catch: (cause) => storageError(method, key, cause) })

const toBytes = (raw: unknown): Uint8Array | undefined => {
  if (raw instanceof Uint8Array) return raw
  if (raw instanceof ArrayBuffer) return new Uint8Array(raw)
  if (typeof raw === "string") return new TextEncoder().encode(raw)
  return undefined
}

const storageError = (method: string, key: string, cause: unknown) =>
  new BlobStore.BlobStoreError({
    module: MODULE,
    method,
    reason: reasonOf(cause),
    key,
    message: `${method} of ${JSON.stringify(key)} failed: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause
  })

/** Chunk writes of one `put` that may be in flight (the next chunk fills meanwhile). */
const WRITES_IN_FLIGHT = 2

/**
 * Cuts a body into chunks of `chunkSize` as its pieces arrive (one copy, into the chunk being
 * filled), hashes each full chunk, and stores it without waiting for the previous one: up to
 * WRITES_IN_FLIGHT writes run while the next chunk fills, so receiving and writing overlap and
 * memory stays bounded by (WRITES_IN_FLIGHT + 1) chunks. Plain promises, no Effect per piece.
 */
class ChunkWriter {
  size = 0
  /** Chunks handed to storage so far (written or in flight): the ones to remove on failure. */
  chunks = 0
  /** The first storage failure, kept until `check`. */
  failure: { readonly index: number; readonly cause: unknown } | undefined = undefined
  private current: Uint8Array | undefined = undefined
  private fill = 0
  private readonly inFlight: Array<Promise<void>> = []

  private closed = false

  constructor(
    readonly key: string,
    readonly chunkSize: number,
    readonly generation: string,
    private readonly hash: { update(b: Uint8Array): unknown; digest(encoding: "hex"): string },
    private readonly store: (generation: string, n: number, bytes: Uint8Array) => Promise<unknown>
  ) {}

  /**
   * Takes a piece; answers a promise to wait for when too many writes are in flight (a piece
   * larger than a chunk is taken a chunk at a time, waiting in between).
   */
  add(piece: Uint8Array): Promise<void> | undefined {
    let at = 0
    while (at < piece.length) {
      if (this.closed) return undefined
      if (this.current === undefined) {
        this.current = new Uint8Array(this.chunkSize)
        this.fill = 0
      }
      const n = Math.min(piece.length - at, this.chunkSize - this.fill)
      this.current.set(n === piece.length ? piece : piece.subarray(at, at + n), this.fill)
      this.fill += n
      at += n
      this.size += n
      if (this.fill === this.chunkSize) {
        const wait = this.seal()
        if (wait !== undefined) {
          if (at === piece.length) return wait
          const rest = piece.subarray(at)
          return wait.then(() => (this.failure === undefined ? this.add(rest) : undefined))
        }
      }
    }
    return undefined
  }

  /** Hands the chunk being filled to storage; answers the oldest write when the queue is full. */
  private seal(): Promise<void> | undefined {
    if (this.closed) return undefined
    const bytes = this.fill === this.chunkSize ? this.current! : this.current!.subarray(0, this.fill)
    this.current = undefined
    this.fill = 0
    this.hash.update(bytes)
    const index = this.chunks++
    const write = this.store(this.generation, index, bytes).then(
      () => {},
      (cause) => {
        this.failure ??= { index, cause }
      }
    )
    this.inFlight.push(write)
    void write.then(() => {
      const i = this.inFlight.indexOf(write)
      if (i >= 0) this.inFlight.splice(i, 1)
    })
    return this.inFlight.length >= WRITES_IN_FLIGHT ? this.inFlight[0] : undefined
  }

  /** Stores the last, partial chunk and waits for every write. */
  async end(): Promise<void> {
    if (this.fill > 0 && this.failure === undefined) void this.seal()
    await this.settle()
  }

  /** Waits for the writes in flight, whatever their outcome. */
  async settle(): Promise<void> {
    while (this.inFlight.length > 0) await Promise.all([...this.inFlight])
  }

  /** Fails with the first storage failure, if any. */
  check(): Effect.Effect<void, BlobStore.BlobStoreError> {
    return this.failure === undefined ? Effect.void : Effect.fail(storageError("put", this.key, this.failure.cause))
  }

  digest(): string {
    return this.hash.digest("hex")
  }

  /** No more chunks: after a failure or an interruption, before the written ones are removed. */
  close(): void {
    this.closed = true
    this.current = undefined
  }
}

// ---------------------------------------------------------------------------------------------
// The store

const STRIPES = 64

const stripeOf = (key: string): number => {
  let h = 0
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) | 0
  return (h >>> 0) % STRIPES
}

/**
 * Builds a BlobStore over an unstorage `Storage`. Within one process, writes and deletes of the
 * same key are serialised (striped locks), so an overwrite removes exactly the chunks it
 * replaced. Across processes the last manifest written wins; a loser's chunks may remain.
 */
export const make = (
  storage: Storage,
  options: { readonly chunkSize?: number; readonly reach?: BlobStore.StoreReach | undefined } = {}
): Effect.Effect<BlobStore.BlobStore> =>
  Effect.gen(function*() {
    const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE
    if (!Number.isInteger(chunkSize) || chunkSize <= 0) {
      return yield* Effect.dieMessage(`UnstorageBlobStore: chunkSize must be a positive integer, got ${chunkSize}`)
    }
    // node:crypto is loaded lazily so that importing core in a browser does not pull it in;
    // Web Crypto has no incremental SHA-256, and Node and Deno both provide this module.
    const { createHash, randomUUID } = yield* Effect.promise(() => import("node:crypto"))
    const locks = yield* Effect.forEach(Array.from({ length: STRIPES }), () => Effect.makeSemaphore(1))
    const locked = (key: string) => locks[stripeOf(key)].withPermits(1)

    const readManifest = (method: string, key: string) =>
      Effect.flatMap(attempt(method, key, () => storage.getItem(manifestKey(key))), (raw) => {
        if (raw === null || raw === undefined) return Effect.succeed(undefined)
        const value = typeof raw === "string" ? safeJson(raw) : raw
        return decodeManifest(value).pipe(
          Effect.mapError((cause) =>
            new BlobStore.BlobStoreError({
              module: MODULE,
              method,
              reason: "Invalid",
              key,
              message: `the manifest of ${JSON.stringify(key)} is unreadable: ${cause.message}`,
              cause
            })
          )
        )
      })

    const requireManifest = (method: string, key: string) =>
      Effect.flatMap(readManifest(method, key), (m) =>
        m === undefined
          ? BlobStore.fail(MODULE, method, "NotFound", `no blob under key ${JSON.stringify(key)}`, { key })
          : Effect.succeed(m))

    const removeChunks = (method: string, key: string, generation: string, count: number) =>
      Effect.forEach(
        Array.from({ length: count }, (_, n) => n),
        (n) => attempt(method, key, () => storage.removeItem(chunkKey(generation, n))),
        { discard: true, concurrency: 4 }
      )

    // Removing replaced chunks happens after the new manifest is visible: the write has
    // succeeded, so a failure here is logged rather than reported to the writer.
    const removeReplaced = (method: string, key: string, old: Manifest | undefined) =>
      old === undefined
        ? Effect.void
        : removeChunks(method, key, old.generation, old.chunks).pipe(
          Effect.catchAll((e) => Effect.logWarning(`blob store left chunks of ${old.generation} behind`, e))
        )

    const newWriter = (key: string) =>
      new ChunkWriter(key, chunkSize, randomUUID(), createHash("sha256"), (generation, n, bytes) => storage.setItemRaw(chunkKey(generation, n), bytes))

    // Publishes the manifest once every chunk is stored. A write that fails or is interrupted
    // before its manifest is visible removes its chunks (after the writes in flight settle);
    // once the manifest is written the chunks are the value, whatever happens next.
    const finish = <E>(
      key: string,
      writer: ChunkWriter,
      consume: Effect.Effect<void, E | BlobStore.BlobStoreError>,
      putOptions: BlobStore.PutOptions
    ): Effect.Effect<BlobStore.PutResult, E | BlobStore.BlobStoreError> => {
      let published = false
      const publish = Effect.gen(function*() {
        const updatedAt = yield* Clock.currentTimeMillis
        const manifest: Manifest = {
          version: 1,
          key,
          size: writer.size,
          digest: writer.digest(),
          ...(putOptions.contentType === undefined ? {} : { contentType: putOptions.contentType }),
          metadata: { ...putOptions.metadata },
          updatedAt,
          generation: writer.generation,
          chunkSize,
          chunks: writer.chunks
        }
        const old = yield* locked(key)(
          Effect.gen(function*() {
            const previous = yield* readManifest("put", key).pipe(
              // An unreadable old manifest must not block a new write; its chunks stay behind.
              Effect.catchIf((e) => e.reason === "Invalid", () => Effect.succeed(undefined))
            )
            yield* attempt("put", key, () => storage.setItem(manifestKey(key), JSON.stringify(manifest)))
            published = true
            return previous
          })
        )
        yield* removeReplaced("put", key, old)
        return { key, size: manifest.size, digest: manifest.digest }
      })
      return Effect.zipRight(consume, publish).pipe(
        Effect.onExit((exit) =>
          Exit.isSuccess(exit) || published
            ? Effect.void
            : Effect.sync(() => writer.close()).pipe(
              Effect.zipRight(Effect.promise(() => writer.settle())),
              Effect.zipRight(Effect.ignore(removeChunks("put", key, writer.generation, writer.chunks)))
            )
        ),
        Effect.ensuring(Effect.sync(() => writer.close()))
      )
    }

    return BlobStore.make({
      module: MODULE,
      ...(options.reach === undefined ? {} : { reach: options.reach }),

      put: <E>(key: string, body: Stream.Stream<Uint8Array, E>, putOptions: BlobStore.PutOptions) =>
        Effect.suspend(() => {
          const writer = newWriter(key)
          const check = Effect.suspend(() => writer.check())
          const consume = Stream.runForEach(body, (piece) =>
            Effect.suspend(() => {
              if (writer.failure !== undefined) return check
              const wait = writer.add(piece)
              return wait === undefined ? Effect.void : Effect.zipRight(Effect.promise(() => wait), check)
            })).pipe(
              Effect.zipRight(Effect.promise(() => writer.end())),
              Effect.zipRight(Effect.suspend(() => writer.check()))
            )
          return finish(key, writer, consume, putOptions)
        }),

      putPieces: (key, body, putOptions) =>
        Effect.suspend(() => {
          const writer = newWriter(key)
          const consume = Effect.tryPromise({
            try: async (signal) => {
              signal.addEventListener("abort", body.cancel, { once: true })
              for (;;) {
                const piece = await body.next()
                if (piece === undefined || signal.aborted) break
                const wait = writer.add(piece)
                if (wait !== undefined) await wait
                if (writer.failure !== undefined) break
              }
              if (!signal.aborted) await writer.end()
            },
            catch: (cause) => (cause instanceof BlobStore.BlobStoreError ? cause : storageError("put", key, cause))
          }).pipe(
            Effect.tapError(() => Effect.sync(body.cancel)),
            Effect.zipRight(Effect.suspend(() => writer.check()))
          )
          return finish(key, writer, consume, putOptions)
        }),

      get: (key) =>
        Effect.map(requireManifest("get", key), (m) => ({
          stat: statOf(m),
          body: m.chunks === 0 ? Stream.empty : Stream.range(0, m.chunks - 1).pipe(
            Stream.mapEffect((n) =>
              Effect.flatMap(attempt("get", key, () => storage.getItemRaw(chunkKey(m.generation, n))), (raw) => {
                const bytes = toBytes(raw)
                if (bytes === undefined) {
                  return BlobStore.fail(
                    MODULE,
                    "get",
                    "NotFound",
                    `chunk ${n} of ${JSON.stringify(key)} is gone: the value was overwritten or deleted while being read`,
                    { key }
                  )
                }
                const expected = n === m.chunks - 1 ? m.size - n * m.chunkSize : m.chunkSize
                return bytes.length === expected ? Effect.succeed(bytes) : BlobStore.fail(
                  MODULE,
                  "get",
                  "Invalid",
                  `chunk ${n} of ${JSON.stringify(key)} has ${bytes.length} bytes, expected ${expected}`,
                  { key }
                )
              }))
          )
        })),

      stat: (key) => Effect.map(requireManifest("stat", key), statOf),

      has: (key) => attempt("has", key, () => storage.hasItem(manifestKey(key))),

      list: (prefix) => {
        const slash = prefix.lastIndexOf("/")
        const base = slash < 0 ? "m" : `m:${prefix.slice(0, slash).replaceAll("/", ":")}`
        return Stream.unwrap(
          Effect.map(attempt("list", prefix, () => storage.getKeys(base)), (keys) =>
            Stream.fromIterable(
              keys
                .filter((k) => k.startsWith("m:") && k.endsWith("$m"))
                .map((k) => k.slice(2, -2).replaceAll(":", "/"))
                .filter((k) => k.startsWith(prefix))
                .sort()
            ))
        )
      },

      delete: (key) =>
        Effect.gen(function*() {
          const old = yield* locked(key)(
            Effect.gen(function*() {
              const previous = yield* readManifest("delete", key).pipe(
                Effect.catchIf((e) => e.reason === "Invalid", () => Effect.succeed(undefined))
              )
              yield* attempt("delete", key, () => storage.removeItem(manifestKey(key)))
              return previous
            })
          )
          if (old !== undefined) yield* removeChunks("delete", key, old.generation, old.chunks)
        })
    })
  })

const safeJson = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

// ---------------------------------------------------------------------------------------------
// Layers

const scopedStorage = (build: Effect.Effect<Storage>) =>
  Effect.acquireRelease(build, (storage) => Effect.promise(() => storage.dispose()).pipe(Effect.ignore))

/**
 * A store on an already configured unstorage `Storage` (mounts, prefixes). The caller owns it:
 * it is not disposed with the layer.
 */
export const layerStorage = (
  storage: Storage,
  options: { readonly chunkSize?: number; readonly reach?: BlobStore.StoreReach } = {}
): Layer.Layer<BlobStore.BlobStore> => Layer.effect(BlobStore.BlobStore, make(storage, options))

/**
 * A store on one unstorage driver; the storage is disposed when the layer's scope closes.
 *
 * @example
 * import redisDriver from "unstorage/drivers/redis"
 * const Blobs = UnstorageBlobStore.layer({ driver: redisDriver({ base: "dstack:blobs", url }) })
 */
export const layer = (options: UnstorageBlobStoreOptions): Layer.Layer<BlobStore.BlobStore> =>
  Layer.scoped(
    BlobStore.BlobStore,
    Effect.flatMap(scopedStorage(Effect.sync(() => createStorage({ driver: options.driver }))), (storage) =>
      make(storage, options))
  )

/**
 * The embedded default: files under `base`, manifests in `base/manifests`, chunks in
 * `base/chunks` (two mounts, so that listing never walks the chunks).
 */
export const layerFs = (options: FsOptions): Layer.Layer<BlobStore.BlobStore> =>
  Layer.scoped(
    BlobStore.BlobStore,
    Effect.gen(function*() {
      const [{ default: fsDriver }, path, fs, { randomUUID }] = yield* Effect.promise(() =>
        Promise.all([import("unstorage/drivers/fs"), import("node:path"), import("node:fs/promises"), import("node:crypto")])
      )
      // A manifest is replaced in place on every overwrite, and the fs driver writes a file by
      // truncating it first: a reader at that moment would read an empty manifest. Manifests are
      // therefore written whole to base/tmp and renamed over the old one (atomic on one file system).
      const manifests = path.resolve(options.base, "manifests")
      const tmp = path.resolve(options.base, "tmp")
      const manifestDriver = fsDriver({ base: manifests, ignore: [] })
      const replaceWhole = async (key: string, value: string | Uint8Array) => {
        // The fs driver's own key check and mapping (`a:b` is the file a/b under the base).
        if (/\.\.:|\.\.$/.test(key)) throw new Error(`Invalid key: ${JSON.stringify(key)}. It should not contain .. segments`)
        const file = path.join(manifests, key.replace(/:/g, "/"))
        const staged = path.join(tmp, `${randomUUID()}.json`)
        await fs.mkdir(tmp, { recursive: true })
        await fs.writeFile(staged, value)
        try {
          await fs.mkdir(path.dirname(file), { recursive: true })
          await fs.rename(staged, file)
        } catch (e) {
          await fs.rm(staged, { force: true })
          throw e
        }
      }
      const storage = yield* scopedStorage(Effect.sync(() => {
        const s = createStorage()
        // `ignore: []`: the driver skips node_modules and .git by default, which are valid keys here.
        s.mount("m", { ...manifestDriver, setItem: replaceWhole, setItemRaw: replaceWhole })
        s.mount("c", fsDriver({ base: path.join(options.base, "chunks"), ignore: [] }))
        return s
      }))
      return yield* make(storage, { ...options, reach: "host" })
    })
  )

/** A store in memory through unstorage's memory driver: chunked like the others, for tests. */
export const layerMemory = (options: MemoryOptions = {}): Layer.Layer<BlobStore.BlobStore> =>
  layer({ driver: memoryDriver(), ...options, reach: "process" })

/**
 * A store in an S3-compatible bucket, shared by every server replica that uses it: chunks of
 * `chunkSize` bytes are objects of their own, so neither side holds a whole blob in memory.
 * Building the layer checks the bucket once (one ListObjectsV2 request) and fails with a
 * BlobStoreError naming the cause: a missing bucket (`Invalid`), refused credentials
 * (`PermissionDenied`), an endpoint that cannot be reached (`Transport`).
 *
 * @example
 * const Blobs = UnstorageBlobStore.layerS3({
 *   bucket: "dstack-blobs", endpoint: "https://s3.eu-west-1.amazonaws.com", region: "eu-west-1",
 *   accessKeyId: process.env.AWS_ACCESS_KEY_ID!, secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY!
 * })
 */
export const layerS3 = (options: S3Options): Layer.Layer<BlobStore.BlobStore, BlobStore.BlobStoreError> =>
  Layer.scoped(
    BlobStore.BlobStore,
    Effect.gen(function*() {
      const driver = s3Driver(options)
      yield* Effect.tryPromise({
        try: () => driver.checkBucket(),
        catch: (cause) =>
          new BlobStore.BlobStoreError({
            module: MODULE,
            method: "open",
            reason: reasonOf(cause),
            message: `the s3 blob store cannot use its bucket: ${cause instanceof Error ? cause.message : String(cause)}`,
            cause
          })
      })
      const storage = yield* scopedStorage(Effect.sync(() => createStorage({ driver })))
      return yield* make(storage, { ...(options.chunkSize === undefined ? {} : { chunkSize: options.chunkSize }), reach: "shared" })
    })
  )


// ---------------------------------------------------------------------------------------------
// Options from the server configuration (the plugin's blob stores by name)

const ChunkSize = Schema.optional(Schema.Int.pipe(Schema.positive())).pipe(Schema.fromKey("chunk_size"))

/** `fs` options: `base` (the directory), `chunk_size`. */
export const FsConfig = Schema.Struct({ base: Schema.NonEmptyString, chunkSize: ChunkSize })
/** `memory` options: `chunk_size`. */
export const MemoryConfig = Schema.Struct({ chunkSize: ChunkSize })
/** `redis` options: `url` (redis://…), `base` (key prefix, default `dstack:blobs`), `chunk_size`. */
export const RedisConfig = Schema.Struct({
  url: Schema.NonEmptyString,
  base: Schema.optional(Schema.NonEmptyString),
  chunkSize: ChunkSize
})

/** `s3` options: `bucket`, `endpoint`, `region`, `access_key_id`, `secret_access_key`, `base`, `chunk_size`. */
export const S3Config = Schema.Struct({
  bucket: Schema.NonEmptyString.annotations({ description: "the bucket that holds the blobs; it must exist" }),
  endpoint: Schema.String.pipe(
    Schema.filter((s) => /^https?:\/\/[^/\s]+(\/\S*)?$/.test(s), {
      message: (issue) => `must be an http:// or https:// URL such as https://s3.eu-west-1.amazonaws.com, got ${JSON.stringify(issue.actual)}`
    })
  ),
  region: Schema.NonEmptyString,
  accessKeyId: Schema.propertySignature(Schema.NonEmptyString).pipe(Schema.fromKey("access_key_id")),
  secretAccessKey: Schema.propertySignature(Schema.NonEmptyString).pipe(Schema.fromKey("secret_access_key")),
  base: Schema.optional(Schema.String.pipe(Schema.pattern(/^[^/].*[^/]$|^[^/]$/, { message: () => "must not start or end with '/'" }))),
  chunkSize: ChunkSize
})

const fromConfig = <A, I, E = never>(
  driver: string,
  schema: Schema.Schema<A, I>,
  build: (options: A) => Layer.Layer<BlobStore.BlobStore, E>
) => {
  const decode = configDecoder(schema, `options of the ${driver} blob store`)
  return (options: unknown): Layer.Layer<BlobStore.BlobStore, BlobStore.BlobStoreError | E> =>
    Layer.unwrapEffect(
      decode(options).pipe(
        Effect.mapError((e) =>
          new BlobStore.BlobStoreError({
            module: MODULE,
            method: "fromOptions",
            reason: "Invalid",
            message: e.message
          })
        ),
        Effect.map(build)
      )
    )
}

/** The blob store `fs` from its options. */
export const fsFromOptions = fromConfig("fs", FsConfig, (o) => layerFs(o))
/** The blob store `memory` from its options. */
export const memoryFromOptions = fromConfig("memory", MemoryConfig, (o) => layerMemory(o))
/** The blob store `redis` from its options: several server replicas can share it. */
export const redisFromOptions = fromConfig("redis", RedisConfig, (o) =>
  Layer.scoped(
    BlobStore.BlobStore,
    Effect.gen(function*() {
      const { default: redisDriver } = yield* Effect.promise(() => import("unstorage/drivers/redis"))
      const storage = yield* scopedStorage(Effect.sync(() =>
        createStorage({ driver: redisDriver({ url: o.url, base: o.base ?? "dstack:blobs" }) })))
      return yield* make(storage, { ...o, reach: "shared" })
    })
  ))
/** The blob store `s3` from its options: several server replicas can share its bucket. */
export const s3FromOptions = fromConfig("s3", S3Config, (o) => layerS3(o))
