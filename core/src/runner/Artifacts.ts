/**
 * Workflow artifacts on the runner: the folders a job lists (`JobSpec.artifacts`, relative to
 * its working directory) are described (path, size, SHA-256 of each file) and packed as a
 * streamed tar.gz when the job has ended; the archives of its dependencies are extracted into
 * the working directory before it starts. Nothing is held in memory beyond a chunk.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Stream } from "effect"
import { packTarball } from "../repos/Tarball.ts"

/** One file of a job's artifacts, its path relative to the working directory. */
export interface ArtifactFile {
  readonly path: string
  readonly size: number
  readonly sha256: string
}

/** Why an artifact path may not be used, or undefined when it may: it must stay inside the working directory. */
export const artifactPathProblem = (p: string): string | undefined => {
  if (p.trim() === "") return "is empty"
  if (path.posix.isAbsolute(p) || p.includes("\\")) return "is absolute; artifacts are folders relative to the working directory"
  const normal = path.posix.normalize(p)
  if (normal === ".." || normal.startsWith("../")) return "leaves the working directory"
  return undefined
}

/** The directory a job works in, on this host: its working directory when relative, else the repo directory. */
export const jobDirectory = (repoDir: string, workingDir: string | undefined): string =>
  workingDir !== undefined && workingDir !== "" && !path.isAbsolute(workingDir) ? path.resolve(repoDir, workingDir) : repoDir

/**
 * The files under the artifact folders (a folder or a single file each), relative to `dir`,
 * sorted. A path that does not exist or leaves `dir` is an Error naming it. Symbolic links are
 * not followed.
 */
export const listArtifactFiles = (dir: string, artifacts: ReadonlyArray<string>): Array<string> => {
  const files = new Set<string>()
  const walk = (rel: string) => {
    const stat = fs.lstatSync(path.join(dir, rel))
    if (stat.isDirectory()) {
      for (const name of fs.readdirSync(path.join(dir, rel)).sort()) walk(path.posix.join(rel, name))
    } else if (stat.isFile()) {
      files.add(rel)
    }
  }
  for (const artifact of artifacts) {
    const problem = artifactPathProblem(artifact)
    if (problem !== undefined) throw new Error(`artifact ${JSON.stringify(artifact)} ${problem}`)
    const rel = path.posix.normalize(artifact).replace(/\/+$/, "")
    if (!fs.existsSync(path.join(dir, rel))) throw new Error(`artifact ${JSON.stringify(artifact)} does not exist in the working directory when the job ended`)
    walk(rel === "" ? "." : rel)
  }
  return [...files].map((f) => f.replace(/^\.\//, "")).sort()
}

/** The SHA-256 and size of a file, read as a stream. */
const hashFile = (file: string): Promise<{ size: number; sha256: string }> =>
  new Promise((resolve, reject) => {
    const hash = createHash("sha256")
    let size = 0
    fs.createReadStream(file)
      .on("data", (chunk) => {
        hash.update(chunk as Buffer)
        size += (chunk as Buffer).length
      })
      .on("error", reject)
      .on("end", () => resolve({ size, sha256: hash.digest("hex") }))
  })

/** The manifest of a job's artifacts: each file with its size and SHA-256. */
export const artifactManifest = (dir: string, artifacts: ReadonlyArray<string>): Effect.Effect<Array<ArtifactFile>, Error> =>
  Effect.tryPromise({
    try: async () => {
      const out: Array<ArtifactFile> = []
      for (const file of listArtifactFiles(dir, artifacts)) out.push({ path: file, ...(await hashFile(path.join(dir, file))) })
      return out
    },
    catch: (cause) => (cause instanceof Error ? cause : new Error(String(cause)))
  })

/** The artifact files as a tar.gz stream, packed lazily. */
export const packArtifacts = (dir: string, artifacts: ReadonlyArray<string>): Effect.Effect<Stream.Stream<Uint8Array, Error>, Error> =>
  Effect.try({
    try: () => packTarball("RunnerArtifacts", dir, listArtifactFiles(dir, artifacts)).pipe(Stream.mapError((e) => new Error(e.message))),
    catch: (cause) => (cause instanceof Error ? cause : new Error(String(cause)))
  })
