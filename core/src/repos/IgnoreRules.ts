/**
 * Which files of a directory a local repo ships: everything except what `.gitignore` files
 * (the root one and nested ones, with git's precedence) and `.dstackignore` files exclude, and
 * never a `.git` directory. Answers sorted relative paths, so that packing is deterministic.
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Effect } from "effect"
import type { Ignore } from "ignore"
import { RepoError } from "../ports/Repo.ts"

/** The files whose rules a directory walk honours, in the order they are applied. */
export const IGNORE_FILES = [".gitignore", ".dstackignore"] as const

/** The `ignore` package's factory: a fresh, empty rule set. */
type IgnoreFactory = () => Ignore

/** A directory's own rules, matched against paths relative to that directory. */
interface RuleSet {
  readonly base: string
  readonly rules: Ignore
}

const toRepoError = (method: string, what: string) => (cause: unknown) => {
  const code = (cause as { code?: string })?.code
  return new RepoError({
    module: "LocalRepo",
    method,
    reason: code === "ENOENT" || code === "ENOTDIR" ? "NotFound" : code === "EACCES" || code === "EPERM" ? "PermissionDenied" : "Unknown",
    message: `${what}: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause
  })
}

/** True when the last rule set that has an opinion about `rel` ignores it (git: deeper files win). */
const isIgnored = (sets: ReadonlyArray<RuleSet>, rel: string, isDir: boolean): boolean => {
  let ignored = false
  for (const set of sets) {
    const sub = set.base === "" ? rel : rel.slice(set.base.length + 1)
    const result = set.rules.test(isDir ? `${sub}/` : sub)
    if (result.ignored) ignored = true
    else if (result.unignored) ignored = false
  }
  return ignored
}

// Plain code-unit order of the `/`-joined paths: the same on every platform and locale.
const byPath = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

/**
 * Lists the files (and symbolic links) under `dir` that a local repo packs, as sorted
 * `/`-separated relative paths. Ignored directories are not walked into.
 *
 * @example
 * const files = yield* listRepoFiles("/home/me/project") // ["README.md", "src/train.py", …]
 */
export const listRepoFiles = (dir: string): Effect.Effect<ReadonlyArray<string>, RepoError> =>
  Effect.gen(function*() {
    const root = path.resolve(dir)
    const stat = yield* Effect.tryPromise({ try: () => fs.stat(root), catch: toRepoError("fromDir", `cannot read the directory ${root}`) })
    if (!stat.isDirectory()) {
      return yield* Effect.fail(new RepoError({ module: "LocalRepo", method: "fromDir", reason: "Invalid", message: `${root} is not a directory` }))
    }
    // A CommonJS module (`export =`): Node and Deno expose the factory as the default export,
    // and type the namespace differently, so it is typed here once.
    const ignoreModule: unknown = yield* Effect.promise(() => import("ignore"))
    const ignore: IgnoreFactory = typeof ignoreModule === "function"
      ? ignoreModule as IgnoreFactory
      : (ignoreModule as { readonly default: IgnoreFactory }).default
    const files: Array<string> = []

    const walk = (rel: string, inherited: ReadonlyArray<RuleSet>): Effect.Effect<void, RepoError> =>
      Effect.gen(function*() {
        const abs = rel === "" ? root : path.join(root, ...rel.split("/"))
        const entries = yield* Effect.tryPromise({
          try: () => fs.readdir(abs, { withFileTypes: true }),
          catch: toRepoError("fromDir", `cannot list ${abs}`)
        })
        const names = new Set(entries.map((e) => e.name))
        let sets = inherited
        const own = ignore()
        let hasOwn = false
        for (const file of IGNORE_FILES) {
          if (!names.has(file)) continue
          const text = yield* Effect.tryPromise({
            try: () => fs.readFile(path.join(abs, file), "utf8"),
            catch: toRepoError("fromDir", `cannot read ${path.join(abs, file)}`)
          })
          own.add(text)
          hasOwn = true
        }
        if (hasOwn) sets = [...inherited, { base: rel, rules: own }]
        for (const entry of entries) {
          if (entry.name === ".git") continue
          const child = rel === "" ? entry.name : `${rel}/${entry.name}`
          if (entry.isDirectory()) {
            if (!isIgnored(sets, child, true)) yield* walk(child, sets)
          } else if (entry.isFile() || entry.isSymbolicLink()) {
            if (!isIgnored(sets, child, false)) files.push(child)
          }
          // Sockets, FIFOs and devices have no place in a code archive.
        }
      })

    yield* walk("", [])
    return files.sort(byPath)
  })
