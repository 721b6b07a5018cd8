/**
 * The conformance suite every Executor runs, against real jobs: the commands run in the repo
 * directory (or its working_dir) with the job's env; all output arrives, per stream and in
 * order, before `exit` completes; exit codes come back as they are; stop asks first and kills
 * after the grace period, abort kills at once, and both say who ended the job; a job that
 * cannot start fails with an ExecutorError of the port's reasons. Commands are POSIX shell, so
 * a container executor passes with a small image (busybox).
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type * as Executor from "../ports/Executor.ts"

export interface ExecutorSuiteOptions {
  /** Added to every job spec, e.g. `{ image: "busybox:latest" }` for a container executor. */
  readonly spec?: Partial<Executor.ExecutionSpec>
  /** A spec (added to the base one) this executor cannot start, and the reason it must fail with. */
  readonly startFailure?: { readonly spec: Partial<Executor.ExecutionSpec>; readonly reason: Executor.ExecutorErrorReason }
  /** Per-test timeout; default 60 s (a container executor starts a container per test). */
  readonly timeoutMs?: number
}

/** A fresh repo directory with `hello.txt` and `sub/inner.txt`, readable from a container too. */
const repoDir = (): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-executor-suite-"))
  fs.mkdirSync(path.join(dir, "sub"))
  fs.writeFileSync(path.join(dir, "hello.txt"), "hello from the repo\n")
  fs.writeFileSync(path.join(dir, "sub", "inner.txt"), "inner\n")
  fs.chmodSync(dir, 0o755)
  return dir
}

interface Collected {
  readonly stdout: Array<string>
  readonly stderr: Array<string>
  readonly text: (stream: "stdout" | "stderr") => string
}

const collector = (): { observer: Executor.ExecutionObserver; collected: Collected } => {
  const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() }
  const collected = {
    stdout: [] as Array<string>,
    stderr: [] as Array<string>,
    text: (stream: "stdout" | "stderr") => collected[stream].join("")
  }
  return {
    collected,
    observer: { log: (stream, bytes) => void collected[stream].push(decoders[stream].decode(bytes, { stream: true })) }
  }
}

/** Polls until `what` holds (a hang detector, not a speed check). */
const eventually = (what: string, check: () => boolean, seconds = 30) =>
  Effect.gen(function*() {
    const deadline = Date.now() + seconds * 1000
    while (!check()) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`${what}: not within ${seconds} s`))
      yield* Effect.sleep("20 millis")
    }
  })

/**
 * Registers the conformance tests of an executor.
 *
 * @example
 * testExecutor("process", ProcessExecutor.make(), { startFailure: { spec: { workingDir: "missing" }, reason: "Executor" } })
 * testExecutor("docker", DockerExecutor.make(), { spec: { image: "busybox:latest" } })
 */
export const testExecutor = (name: string, executor: Executor.Executor, options: ExecutorSuiteOptions = {}): void => {
  const timeout = options.timeoutMs ?? 60_000
  const spec = (commands: ReadonlyArray<string>, extra: Partial<Executor.ExecutionSpec> = {}): Executor.ExecutionSpec => ({
    commands,
    env: {},
    repoDir: repoDir(),
    privileged: false,
    ports: [],
    mounts: [],
    gpus: 0,
    ...options.spec,
    ...extra
  })
  const run = (s: Executor.ExecutionSpec) =>
    Effect.gen(function*() {
      const { observer, collected } = collector()
      const execution = yield* executor.start(s, observer)
      const exit = yield* execution.exit
      return { execution, exit, collected }
    })

  describe(`Executor conformance: ${name}`, () => {
    it.live("runs the commands in the repo directory and delivers all output before exit completes", () =>
      Effect.gen(function*() {
        const { exit, collected } = yield* run(spec(["cat hello.txt", "echo to-stderr >&2", "echo second"]))
        expect(exit).toEqual({ exitCode: 0 })
        expect(collected.text("stdout")).toBe("hello from the repo\nsecond\n")
        expect(collected.text("stderr")).toBe("to-stderr\n")
      }), timeout)

    it.live("keeps every line of a long output, in order", () =>
      Effect.gen(function*() {
        const lines = 5000
        const { exit, collected } = yield* run(spec([`i=0; while [ $i -lt ${lines} ]; do echo "line $i"; i=$((i+1)); done`]))
        expect(exit.exitCode).toBe(0)
        const got = collected.text("stdout").split("\n").filter((l) => l !== "")
        expect(got.length).toBe(lines)
        expect(got.every((l, i) => l === `line ${i}`)).toBe(true)
      }), timeout)

    it.live("gives the job its env and a working_dir relative to the repo", () =>
      Effect.gen(function*() {
        const { exit, collected } = yield* run(spec(['echo "$GREETING|$EMPTY|"', "cat inner.txt"], { env: { GREETING: "hi there", EMPTY: "" }, workingDir: "sub" }))
        expect(exit.exitCode).toBe(0)
        expect(collected.text("stdout")).toBe("hi there||\ninner\n")
      }), timeout)

    it.live("answers a failing command's exit code, and stops at the first failing command", () =>
      Effect.gen(function*() {
        const { exit, collected } = yield* run(spec(["echo before", "exit 7", "echo never"]))
        expect(exit).toEqual({ exitCode: 7 })
        expect(collected.text("stdout")).toBe("before\n")
      }), timeout)

    it.live("stop asks the job to end (SIGTERM) and reports endedBy stop", () =>
      Effect.gen(function*() {
        const { observer, collected } = collector()
        const execution = yield* executor.start(spec(["trap 'echo got-term; exit 0' TERM; echo started; while true; do sleep 0.1; done"]), observer)
        yield* eventually("the job starts", () => collected.text("stdout").includes("started"))
        const ended = yield* execution.stop("20 seconds")
        expect(ended.endedBy).toBe("stop")
        expect(collected.text("stdout")).toContain("got-term")
        expect(yield* execution.exit).toEqual(ended)
      }), timeout)

    it.live("stop kills a job that ignores SIGTERM once the grace period is over", () =>
      Effect.gen(function*() {
        const { observer, collected } = collector()
        const execution = yield* executor.start(spec(["trap '' TERM; echo started; while true; do sleep 0.1; done"]), observer)
        yield* eventually("the job starts", () => collected.text("stdout").includes("started"))
        const started = Date.now()
        const ended = yield* execution.stop("1 second")
        expect(ended.endedBy).toBe("stop")
        expect(ended.exitCode).not.toBe(0)
        // Killed after the grace period, not at once and not never.
        expect(Date.now() - started).toBeGreaterThanOrEqual(900)
        expect(Date.now() - started).toBeLessThan(20_000)
      }), timeout)

    it.live("abort kills the job at once and reports endedBy abort; a second abort or stop answers the same", () =>
      Effect.gen(function*() {
        const { observer, collected } = collector()
        const execution = yield* executor.start(spec(["trap '' TERM; echo started; while true; do sleep 0.1; done"]), observer)
        yield* eventually("the job starts", () => collected.text("stdout").includes("started"))
        const waiting = yield* Effect.fork(execution.exit)
        const ended = yield* execution.abort
        expect(ended.endedBy).toBe("abort")
        expect(ended.exitCode).not.toBe(0)
        expect(yield* Fiber.join(waiting)).toEqual(ended)
        expect(yield* execution.abort).toEqual(ended)
        expect(yield* execution.stop(Duration.seconds(1))).toEqual(ended)
      }), timeout)

    it.live("reports usage as non-negative numbers while the job runs", () =>
      Effect.gen(function*() {
        const { observer, collected } = collector()
        const execution = yield* executor.start(spec(["echo started; while true; do sleep 0.1; done"]), observer)
        yield* eventually("the job starts", () => collected.text("stdout").includes("started"))
        const usage = yield* execution.usage
        expect(usage.cpuUsageMicro).toBeGreaterThanOrEqual(0)
        expect(usage.memoryUsageBytes).toBeGreaterThanOrEqual(0)
        expect(execution.id).not.toBe("")
        yield* execution.abort
      }), timeout)

    if (options.startFailure !== undefined) {
      const failure = options.startFailure
      it.live(`a job it cannot start fails with an ExecutorError (${failure.reason}) that says why`, () =>
        Effect.gen(function*() {
          const result = yield* Effect.exit(executor.start(spec(["echo never"], failure.spec), collector().observer))
          expect(Exit.isFailure(result)).toBe(true)
          if (Exit.isFailure(result) && result.cause._tag === "Fail") {
            const error = result.cause.error
            expect(error._tag).toBe("ExecutorError")
            expect(error.reason).toBe(failure.reason)
            expect(error.message.length).toBeGreaterThan(10)
          } else {
            expect.fail(`expected a failure, got ${String(result)}`)
          }
        }), timeout)
    }
  })
}
