/**
 * Files given in code as a run's code (upstream `VirtualRepo`): `addFile(path, content)` and
 * `addFileFromPackage(package, path)`, packed as a deterministic tar.gz in memory (virtual
 * repos are small by nature) and keyed by its SHA-256.
 */
import * as fs from "node:fs/promises"
import { createRequire } from "node:module"
import * as path from "node:path"
import { gzipSync } from "node:zlib"
import { Effect, Stream } from "effect"
import type { RunRepoData } from "../domain/Job.ts"
import { RepoError } from "../ports/Repo.ts"
import { badRepoId } from "./LocalRepo.ts"
import { REPO_ID_PATTERN } from "./RepoCode.ts"
import type { RepoCode } from "./RepoCode.ts"
import { sha256Hex } from "./Tarball.ts"

const invalid = (method: string, message: string) => new RepoError({ module: "VirtualRepo", method, reason: "Invalid", message })

/** Why `p` is not a plain relative path inside a tree, or `undefined` when it is. */
export const treePathProblem = (p: string): string | undefined => {
  if (typeof p !== "string" || p === "") return "must not be empty"
  if (p.startsWith("/") || /^[A-Za-z]:/.test(p)) return "must be relative, not absolute"
  if (p.includes("\\")) return "must use '/' as separator"
  if (p.includes("\u0000")) return "must not contain NUL"
  const segments = p.split("/")
  if (segments.includes("..")) return "must not contain a '..' segment"
  if (segments.some((s) => s === "" || s === ".")) return "must not contain empty or '.' segments"
  return undefined
}

// ---------------------------------------------------------------------------------------------
// A minimal ustar writer: regular files only, PAX records for long or non-ASCII paths.

const encoder = new TextEncoder()

const octal = (value: number, width: number): string => value.toString(8).padStart(width - 1, "0") + "\0"

const header = (name: string, size: number, type: "0" | "x"): Uint8Array => {
  const block = new Uint8Array(512)
  const put = (text: string, at: number) => block.set(encoder.encode(text), at)
  put(name, 0)
  put(octal(type === "x" ? 0o644 : 0o644, 8), 100)
  put(octal(0, 8), 108)
  put(octal(0, 8), 116)
  put(octal(size, 12), 124)
  put(octal(0, 12), 136)
  put("        ", 148)
  put(type, 156)
  put("ustar\u000000", 257)
  let sum = 0
  for (const b of block) sum += b
  put(octal(sum, 7) + " ", 148)
  return block
}

const padded = (bytes: Uint8Array): ReadonlyArray<Uint8Array> => {
  const rest = bytes.length % 512
  return rest === 0 ? [bytes] : [bytes, new Uint8Array(512 - rest)]
}

const paxRecord = (key: string, value: string): string => {
  const body = ` ${key}=${value}\n`
  let length = encoder.encode(body).length + 1
  while (String(length).length + encoder.encode(body).length !== length) length++
  return `${length}${body}`
}

/** A tar.gz of the files, in sorted path order, with fixed modes and times. */
export const tarGzOf = (files: ReadonlyMap<string, Uint8Array>): Uint8Array => {
  const parts: Array<Uint8Array> = []
  for (const name of [...files.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
    const content = files.get(name)!
    const nameBytes = encoder.encode(name)
    // eslint-disable-next-line no-control-regex
    if (nameBytes.length > 100 || /[^\u0020-\u007e]/.test(name)) {
      const pax = encoder.encode(paxRecord("path", name))
      parts.push(header(`PaxHeader/${sha256Hex(name).slice(0, 16)}`, pax.length, "x"), ...padded(pax))
      parts.push(header(sha256Hex(name).slice(0, 16), content.length, "0"), ...padded(content))
    } else {
      parts.push(header(name, content.length, "0"), ...padded(content))
    }
  }
  parts.push(new Uint8Array(1024))
  const tar = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    tar.set(p, at)
    at += p.length
  }
  return new Uint8Array(gzipSync(tar))
}

// ---------------------------------------------------------------------------------------------

export interface VirtualRepoOptions {
  /** A unique id of the repo in the project. */
  readonly repoId: string
}

export interface AddFromPackageOptions {
  /** Where the package is resolved from (a directory); default the current directory. */
  readonly resolveFrom?: string
}

/**
 * A repo made in code. Add files, then hand it to a run like any other repo.
 *
 * @example
 * const repo = new VirtualRepo({ repoId: "my-training" })
 * yield* repo.addFile("train.py", "print('hello')")
 * yield* repo.addFileFromPackage("my-package", "requirements.txt")
 * repo.codeHash // SHA-256 of the tar.gz
 */
export class VirtualRepo implements RepoCode {
  readonly repoId: string
  readonly codeKind = "tarball" as const
  private readonly files = new Map<string, Uint8Array>()
  private packed: Uint8Array | undefined

  constructor(options: VirtualRepoOptions) {
    // A constructor cannot return an Effect: a bad id is thrown, as upstream raises.
    if (!REPO_ID_PATTERN.test(options?.repoId)) throw badRepoId("VirtualRepo", "constructor", options?.repoId)
    this.repoId = options.repoId
  }

  get repoData(): RunRepoData {
    return { repoType: "virtual" }
  }

  /** The paths added so far, sorted. */
  get paths(): ReadonlyArray<string> {
    return [...this.files.keys()].sort()
  }

  /** Adds (or replaces) a file at `filePath` inside the repo. */
  addFile(filePath: string, content: string | Uint8Array): Effect.Effect<void, RepoError> {
    return Effect.suspend(() => {
      const problem = treePathProblem(filePath)
      if (problem !== undefined) return Effect.fail(invalid("addFile", `file path ${JSON.stringify(filePath)} ${problem}`))
      if (typeof content !== "string" && !(content instanceof Uint8Array)) {
        return Effect.fail(invalid("addFile", `the content of ${filePath} must be a string or a Uint8Array`))
      }
      this.files.set(filePath, typeof content === "string" ? encoder.encode(content) : content.slice())
      this.packed = undefined
      return Effect.void
    })
  }

  /**
   * Adds a file of an installed package, at the same relative path in the repo. The path must
   * stay inside the package's directory (symbolic links are resolved before the check).
   */
  addFileFromPackage(packageName: string, filePath: string, options: AddFromPackageOptions = {}): Effect.Effect<void, RepoError> {
    const self = this
    return Effect.gen(function*() {
      const problem = treePathProblem(filePath)
      if (problem !== undefined) {
        return yield* Effect.fail(invalid("addFileFromPackage", `file path ${JSON.stringify(filePath)} of package ${packageName} ${problem}`))
      }
      const packageDir = yield* resolvePackageDir(packageName, options.resolveFrom ?? process.cwd())
      const realDir = yield* Effect.promise(() => fs.realpath(packageDir))
      const target = path.join(realDir, ...filePath.split("/"))
      const realTarget = yield* Effect.tryPromise({
        try: () => fs.realpath(target),
        catch: (cause) =>
          new RepoError({
            module: "VirtualRepo",
            method: "addFileFromPackage",
            reason: "NotFound",
            message: `package ${packageName} has no file ${filePath} (looked in ${realDir})`,
            cause
          })
      })
      if (realTarget !== realDir && !realTarget.startsWith(realDir + path.sep)) {
        return yield* Effect.fail(invalid("addFileFromPackage", `${filePath} resolves to ${realTarget}, outside package ${packageName} (${realDir})`))
      }
      const content = yield* Effect.tryPromise({
        try: () => fs.readFile(realTarget),
        catch: (cause) =>
          new RepoError({
            module: "VirtualRepo",
            method: "addFileFromPackage",
            reason: (cause as { code?: string })?.code === "EISDIR" ? "Invalid" : "Unknown",
            message: `cannot read ${filePath} of package ${packageName}: ${cause instanceof Error ? cause.message : String(cause)}`,
            cause
          })
      })
      yield* self.addFile(filePath, new Uint8Array(content))
    })
  }

  private get archive(): Uint8Array {
    if (this.packed === undefined) this.packed = tarGzOf(this.files)
    return this.packed
  }

  get codeHash(): string {
    return sha256Hex(this.archive)
  }

  get codeSize(): number {
    return this.archive.length
  }

  get code(): Stream.Stream<Uint8Array, RepoError> {
    return Stream.succeed(this.archive)
  }
}

/**
 * The directory of an installed package, resolved as `require` would from `from`: through its
 * `package.json` when exported, else by walking up from its main entry.
 */
export const resolvePackageDir = (packageName: string, from: string): Effect.Effect<string, RepoError> =>
  Effect.gen(function*() {
    if (typeof packageName !== "string" || !/^(@[a-z0-9][\w.-]*\/)?[a-z0-9][\w.-]*$/i.test(packageName)) {
      return yield* Effect.fail(invalid("addFileFromPackage", `${JSON.stringify(packageName)} is not a package name`))
    }
    const require = createRequire(path.join(path.resolve(from), "__resolve__.js"))
    const notFound = (cause: unknown) =>
      new RepoError({
        module: "VirtualRepo",
        method: "addFileFromPackage",
        reason: "NotFound",
        message: `package ${packageName} is not installed (resolved from ${path.resolve(from)})`,
        cause
      })
    const manifest = yield* Effect.try(() => require.resolve(`${packageName}/package.json`)).pipe(Effect.option)
    if (manifest._tag === "Some") return path.dirname(manifest.value)
    const main = yield* Effect.try({ try: () => require.resolve(packageName), catch: notFound })
    let dir = path.dirname(main)
    for (;;) {
      const name = yield* Effect.promise(() =>
        fs.readFile(path.join(dir, "package.json"), "utf8").then((t) => (JSON.parse(t) as { name?: string }).name, () => undefined)
      )
      if (name === packageName) return dir
      const parent = path.dirname(dir)
      if (parent === dir) return yield* Effect.fail(notFound(new Error(`no package.json named ${packageName} above ${main}`)))
      dir = parent
    }
  })
