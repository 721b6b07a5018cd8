/**
 * The git command line, run as a child process (Node and Deno): the one place where RemoteRepo
 * and the runner-side materialization talk to git, mapping every failure to a RepoError that
 * names the command and what git said.
 */
import { spawn } from "node:child_process"
import { Effect } from "effect"
import { RepoError } from "../ports/Repo.ts"
import type { RepoErrorReason } from "../ports/Repo.ts"

export interface GitOptions {
  /** The working directory of the command. */
  readonly cwd: string
  /** Bytes written to git's standard input. */
  readonly input?: Uint8Array
  /** Extra environment variables (over the process's own). */
  readonly env?: Readonly<Record<string, string>>
  /** Exit codes that count as success besides 0 (e.g. 1 for `git diff --exit-code`). */
  readonly okCodes?: ReadonlyArray<number>
}

export interface GitResult {
  readonly code: number
  readonly stdout: Uint8Array
  readonly stderr: string
}

/** Where a git failure is reported: the module and method of the caller, and what it was doing. */
export interface GitFailure {
  readonly module: string
  readonly method: string
  /** Says what failed, e.g. `cannot clone https://host/repo.git`. */
  readonly what: string
  readonly reason?: RepoErrorReason
}

const concat = (chunks: ReadonlyArray<Buffer>): Uint8Array => new Uint8Array(Buffer.concat(chunks))

/**
 * Runs `git <args>` and collects its output. A missing git binary or a non-zero exit fails with
 * a RepoError whose message is `<what>: <git's stderr>`.
 */
export const git = (args: ReadonlyArray<string>, options: GitOptions, failure: GitFailure): Effect.Effect<GitResult, RepoError> =>
  Effect.async<GitResult, RepoError>((resume) => {
    const child = spawn("git", [...args], {
      cwd: options.cwd,
      // Never wait for a password prompt: a job would hang instead of failing.
      env: { ...process.env, GIT_TERMINAL_PROMPT: "0", LC_ALL: "C", ...options.env },
      stdio: ["pipe", "pipe", "pipe"]
    })
    const out: Array<Buffer> = []
    const err: Array<Buffer> = []
    child.stdout.on("data", (c: Buffer) => out.push(c))
    child.stderr.on("data", (c: Buffer) => err.push(c))
    child.stdin.on("error", () => {
      // git may exit before reading all of its input (e.g. on a bad argument); the exit code says why.
    })
    child.once("error", (cause) =>
      resume(
        Effect.fail(
          new RepoError({
            module: failure.module,
            method: failure.method,
            reason: "Unknown",
            message: `${failure.what}: cannot run git (${cause.message}); is git installed?`,
            cause
          })
        )
      ))
    child.once("close", (code) => {
      const stderr = Buffer.concat(err).toString("utf8").trim()
      const exit = code ?? 1
      if (exit === 0 || options.okCodes?.includes(exit)) {
        resume(Effect.succeed({ code: exit, stdout: concat(out), stderr }))
        return
      }
      resume(
        Effect.fail(
          new RepoError({
            module: failure.module,
            method: failure.method,
            reason: failure.reason ?? "Unknown",
            message: `${failure.what}: git ${args[0]} exited with ${exit}${stderr ? `: ${stderr}` : ""}`
          })
        )
      )
    })
    if (options.input !== undefined && options.input.length > 0) child.stdin.end(Buffer.from(options.input))
    else child.stdin.end()
    return Effect.sync(() => {
      if (child.exitCode === null) child.kill("SIGKILL")
    })
  })

/** Runs git and answers its standard output as trimmed text. */
export const gitText = (args: ReadonlyArray<string>, options: GitOptions, failure: GitFailure): Effect.Effect<string, RepoError> =>
  Effect.map(git(args, options, failure), (r) => new TextDecoder().decode(r.stdout).trim())
