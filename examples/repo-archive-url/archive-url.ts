/**
 * A repo type plugin, `@acme/repo-archive-url`: a job's code is a tar.gz archive at a URL,
 * pinned by its sha256. `pack` (on the client) checks the source and records the URL and the
 * hash in the run's repo data; `materialize` (on the runner) downloads the archive, refuses it
 * when its sha256 differs, and extracts it into the job's repo directory. The runner learns the
 * type from its runner build's plugins (see runner.ts).
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { definePlugin, Repo } from "@dstack-ts/core"
import { Effect } from "effect"
import * as tar from "tar"

export const TYPE = "archive-url"
const MODULE = "ArchiveUrlRepo"

const SHA256 = /^[0-9a-f]{64}$/

const invalid = (method: string, message: string, cause?: unknown) =>
  new Repo.RepoError({ module: MODULE, method, reason: "Invalid", message, ...(cause === undefined ? {} : { cause }) })

/** The source and the repo data: `{ url, sha256 }` of a tar.gz reachable from the runner. */
const readPin = (method: string, fields: Record<string, unknown>): Effect.Effect<{ url: string; sha256: string }, Repo.RepoError> => {
  const { url, sha256 } = fields
  if (typeof url !== "string" || !/^https?:\/\//.test(url)) {
    return Effect.fail(invalid(method, `an ${TYPE} repo needs url, an http(s) URL of a tar.gz archive, got ${JSON.stringify(url)}`))
  }
  if (typeof sha256 !== "string" || !SHA256.test(sha256)) {
    return Effect.fail(invalid(method, `an ${TYPE} repo needs sha256, the archive's SHA-256 as 64 lowercase hex digits, got ${JSON.stringify(sha256)}`))
  }
  return Effect.succeed({ url, sha256 })
}

const download = (url: string) =>
  Effect.tryPromise({
    try: async () => {
      const response = await fetch(url)
      if (!response.ok) throw new Error(`HTTP ${response.status}`)
      return new Uint8Array(await response.arrayBuffer())
    },
    catch: (cause) =>
      new Repo.RepoError({ module: MODULE, method: "materialize", reason: "Transport", message: `cannot download ${url}: ${cause instanceof Error ? cause.message : String(cause)}`, cause })
  })

/** Extracts a tar.gz into `dir`; tar refuses absolute paths and `..` in entries. */
const extract = (bytes: Uint8Array, dir: string, url: string) =>
  Effect.tryPromise({
    try: async () => {
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "archive-url-"))
      try {
        const file = path.join(tmp, "archive.tar.gz")
        fs.writeFileSync(file, bytes)
        await tar.x({ file, cwd: dir, strict: true })
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true })
      }
    },
    catch: (cause) => invalid("materialize", `the archive at ${url} is not a tar.gz: ${cause instanceof Error ? cause.message : String(cause)}`, cause)
  })

/** The Repo: `{ type: "archive-url", url, sha256 }`. */
export const archiveUrlRepo: Repo.Repo = {
  type: TYPE,
  pack: (source) =>
    Effect.gen(function*() {
      if (source.type !== TYPE) return yield* Effect.fail(invalid("pack", `not an ${TYPE} source: type ${JSON.stringify(source.type)}`))
      const pin = yield* readPin("pack", source)
      // The code blob is the pin itself: equal pins give equal hashes, so it is uploaded once.
      const archive = new TextEncoder().encode(JSON.stringify({ url: pin.url, sha256: pin.sha256 }))
      return {
        repoData: { repoType: TYPE, url: pin.url, sha256: pin.sha256 },
        codeHash: createHash("sha256").update(archive).digest("hex"),
        archive
      }
    }),
  materialize: (code, dir) =>
    Effect.gen(function*() {
      const pin = yield* readPin("materialize", code.repoData as unknown as Record<string, unknown>)
      const bytes = yield* download(pin.url)
      const got = createHash("sha256").update(bytes).digest("hex")
      if (got !== pin.sha256) {
        return yield* Effect.fail(invalid("materialize", `the archive at ${pin.url} has sha256 ${got}, but the run pins ${pin.sha256}`))
      }
      yield* extract(bytes, dir, pin.url)
    })
}

/** The plugin: contributes the repo type `archive-url` (to the client that packs and to the runner build). */
export default definePlugin({
  name: "@acme/repo-archive-url",
  version: "0.1.0",
  core: "^0.1.0",
  description: "Code from a tar.gz at a URL, pinned by its sha256, downloaded by the runner",
  repos: { [TYPE]: archiveUrlRepo }
})
