// Helpers for the repo tests: temporary directories, files, and git run synchronously with a
// fixed identity (setup code, outside the Effects under test).
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

const created: Array<string> = []

/** A fresh temporary directory, removed by `cleanup`. */
export const tempDir = (prefix = "dstack-repo-test-"): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  created.push(dir)
  return dir
}

export const cleanup = (): void => {
  for (const dir of created.splice(0)) fs.rmSync(dir, { recursive: true, force: true })
}

/** Writes files (relative path → content), creating parent directories. */
export const writeTree = (dir: string, files: Record<string, string | Uint8Array>): void => {
  for (const [file, content] of Object.entries(files)) {
    const target = path.join(dir, file)
    fs.mkdirSync(path.dirname(target), { recursive: true })
    fs.writeFileSync(target, content)
  }
}

/** Every regular file under `dir` (skipping `.git`) with its content, as relative paths. */
export const readTree = (dir: string): Record<string, string> => {
  const out: Record<string, string> = {}
  const walk = (rel: string) => {
    for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      if (entry.name === ".git") continue
      const child = rel === "" ? entry.name : `${rel}/${entry.name}`
      if (entry.isDirectory()) walk(child)
      else if (entry.isFile()) out[child] = fs.readFileSync(path.join(dir, child), "utf8")
    }
  }
  walk("")
  return out
}

const GIT_ENV = {
  ...process.env,
  GIT_AUTHOR_NAME: "Test Author",
  GIT_AUTHOR_EMAIL: "author@example.com",
  GIT_COMMITTER_NAME: "Test Author",
  GIT_COMMITTER_EMAIL: "author@example.com",
  GIT_CONFIG_NOSYSTEM: "1"
}

/** Runs git in `cwd` and answers its trimmed output; throws on failure. */
export const gitSync = (cwd: string, ...args: Array<string>): string =>
  execFileSync("git", args, { cwd, env: GIT_ENV, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim()

/**
 * A bare repository with one commit on `main` (the given files) and a clone of it to work in.
 */
export const gitFixture = (files: Record<string, string | Uint8Array>) => {
  const root = tempDir("dstack-git-")
  const bare = path.join(root, "remote.git")
  const work = path.join(root, "work")
  gitSync(root, "init", "--quiet", "--bare", "--initial-branch=main", bare)
  gitSync(root, "clone", "--quiet", bare, work)
  gitSync(work, "checkout", "--quiet", "-B", "main")
  writeTree(work, files)
  gitSync(work, "add", "-A")
  gitSync(work, "commit", "--quiet", "-m", "initial")
  gitSync(work, "push", "--quiet", "origin", "main")
  return { root, bare, work, head: gitSync(work, "rev-parse", "HEAD") }
}
