/**
 * Code archives as deterministic tar.gz: the same files give the same bytes (sorted entries,
 * mtime 0, no owner, ctime or atime), so the SHA-256 of the archive identifies the code. Also
 * hashing a stream as it passes, and extraction that refuses entries escaping the target.
 */
import { createHash } from "node:crypto"
import * as path from "node:path"
import { Readable } from "node:stream"
import { pipeline } from "node:stream/promises"
import { Effect, Either, Ref, Stream } from "effect"
import { RepoError } from "../ports/Repo.ts"

/** The fixed modification time of every entry (the epoch). */
const FIXED_MTIME = new Date(0)

const message = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

/**
 * Streams a tar.gz of `files` (relative `/`-separated paths, in the given order) read from
 * `dir`. Each run of the stream packs anew, lazily: nothing is buffered beyond a chunk.
 */
export const packTarball = (module: string, dir: string, files: ReadonlyArray<string>): Stream.Stream<Uint8Array, RepoError> =>
  Stream.unwrap(
    Effect.map(
      Effect.promise(() => import("tar")),
      (tar) => {
        // A leading `@` would make tar read the file as an archive to include: `./` avoids it
        // and extraction strips it again.
        const names = files.map((f) => (f.startsWith("@") ? `./${f}` : f))
        return Stream.fromAsyncIterable(
          tar.c({ cwd: dir, gzip: true, portable: true, mtime: FIXED_MTIME, noDirRecurse: true, follow: false, strict: true }, names) as AsyncIterable<Uint8Array>,
          (cause) =>
            new RepoError({
              module,
              method: "pack",
              reason: (cause as { code?: string })?.code === "ENOENT" ? "NotFound" : "Unknown",
              message: `cannot pack ${dir}: ${message(cause)}`,
              cause
            })
        ).pipe(Stream.map((chunk) => new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)))
      }
    )
  )

/** The SHA-256 (lowercase hex) and size of a stream's bytes, computed as they pass. */
export const hashStream = <E>(stream: Stream.Stream<Uint8Array, E>): Effect.Effect<{ readonly hash: string; readonly size: number }, E> =>
  Effect.suspend(() => {
    const hash = createHash("sha256")
    let size = 0
    return Stream.runForEach(stream, (chunk) =>
      Effect.sync(() => {
        hash.update(chunk)
        size += chunk.length
      })).pipe(Effect.map(() => ({ hash: hash.digest("hex"), size })))
  })

/** The SHA-256 (lowercase hex) of some bytes. */
export const sha256Hex = (bytes: Uint8Array | string): string => createHash("sha256").update(bytes).digest("hex")

const ALLOWED_TYPES = new Set(["File", "OldFile", "ContiguousFile", "Directory", "SymbolicLink"])

/**
 * Why an archive entry may not be written under the target directory, or `undefined` when it
 * may: absolute paths, `..` segments, links pointing outside, hard links and special files.
 */
export const entryProblem = (entryPath: string, type: string, linkpath: string | undefined): string | undefined => {
  const p = entryPath.replace(/^(\.\/)+/, "")
  if (p.startsWith("/") || /^[A-Za-z]:/.test(p) || p.includes("\\")) return "is an absolute path"
  if (p.split("/").includes("..")) return "contains a '..' segment"
  if (!ALLOWED_TYPES.has(type)) return `is a ${type} entry; only files, directories and symbolic links are allowed`
  if (type === "SymbolicLink") {
    if (linkpath === undefined || linkpath.startsWith("/")) return `is a symbolic link to an absolute path (${linkpath})`
    const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(p), linkpath))
    if (resolved === ".." || resolved.startsWith("../")) return `is a symbolic link pointing outside the repo (${linkpath})`
  }
  return undefined
}

/**
 * Extracts a tar or tar.gz (detected) into `dir`, streaming. Any entry that would land outside
 * `dir` fails the extraction with `Invalid`, naming the entry (the entries before it may have
 * been written: the caller discards the directory). An empty input extracts nothing.
 */
export const extractTarball = <E>(
  module: string,
  archive: Uint8Array | Stream.Stream<Uint8Array, E>,
  dir: string
): Effect.Effect<void, RepoError | E> =>
  Effect.gen(function*() {
    const tar = yield* Effect.promise(() => import("tar"))
    const sourceError = yield* Ref.make<Either.Either<void, E>>(Either.right(undefined))
    let received = 0
    const source: Stream.Stream<Uint8Array> = (archive instanceof Uint8Array
      ? Stream.succeed(archive)
      : archive.pipe(Stream.tapError((e) => Ref.set(sourceError, Either.left(e))), Stream.orDie)).pipe(
        Stream.tap((chunk) => Effect.sync(() => (received += chunk.length)))
      )
    let refused: string | undefined
    const result = yield* Effect.either(Effect.tryPromise(async () => {
      const unpack = tar.x({
        cwd: dir,
        strict: true,
        filter: (entryPath, entry) => {
          const e = entry as { type?: string; linkpath?: string }
          const problem = entryProblem(entryPath, e.type ?? "File", e.linkpath)
          if (problem !== undefined && refused === undefined) refused = `archive entry ${JSON.stringify(entryPath)} ${problem}`
          return problem === undefined
        }
      })
      await pipeline(Readable.fromWeb(Stream.toReadableStream(source) as import("node:stream/web").ReadableStream<Uint8Array>), unpack)
    }))
    const upstream = yield* Ref.get(sourceError)
    if (Either.isLeft(upstream)) return yield* Effect.fail(upstream.left)
    // No code at all (an empty upload) leaves the directory as it is.
    if (received === 0) return
    if (Either.isLeft(result)) {
      const cause = result.left.error
      return yield* Effect.fail(
        new RepoError({ module, method: "materialize", reason: "Invalid", message: `cannot extract the code archive into ${dir}: ${message(cause)}`, cause })
      )
    }
    if (refused !== undefined) {
      return yield* Effect.fail(new RepoError({ module, method: "materialize", reason: "Invalid", message: `refused to extract the code archive: ${refused}` }))
    }
  })
