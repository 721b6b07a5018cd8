// The process executor against real processes: exit codes, env, working dir, output order,
// and stop/abort of a whole process tree.
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Exit } from "effect"
import type { Executor } from "@dstack-ts/core"
import { isAlive } from "../src/ProcessUsage.ts"
import * as ProcessExecutor from "../src/ProcessExecutor.ts"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

/** Live (not zombie) processes whose process group is `pgid`. */
const groupMembers = (pgid: number): Array<number> =>
  fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e)).flatMap((e) => {
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, "utf8")
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      return Number(fields[2]) === pgid && fields[0] !== "Z" ? [Number(e)] : []
    } catch {
      return []
    }
  })

const tmpRepo = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-proc-"))
  fs.mkdirSync(path.join(dir, "sub"))
  return dir
}

const spec = (commands: Array<string>, extra: Partial<Executor.ExecutionSpec> = {}): Executor.ExecutionSpec => ({
  commands,
  env: {},
  repoDir: tmpRepo(),
  privileged: false,
  ports: [],
  mounts: [],
  gpus: 0,
  ...extra
})

/** Starts a job and collects its output per stream. */
const startCollecting = (s: Executor.ExecutionSpec) =>
  Effect.gen(function* () {
    const out = { stdout: "", stderr: "", chunks: [] as Array<string> }
    const decoder = { stdout: new TextDecoder(), stderr: new TextDecoder() }
    const execution = yield* ProcessExecutor.make().start(s, {
      log: (stream, bytes) => {
        const text = decoder[stream].decode(bytes, { stream: true })
        out[stream] += text
        out.chunks.push(text)
      }
    })
    return { execution, out }
  })

/** Waits until the job printed something matching `re`; returns the match. */
const waitForOutput = (out: { stdout: string }, re: RegExp) =>
  Effect.gen(function* () {
    for (let i = 0; i < 200; i++) {
      const m = out.stdout.match(re)
      if (m) return m
      yield* Effect.sleep("25 millis")
    }
    return yield* Effect.die(new Error(`output never matched ${re}: ${JSON.stringify(out.stdout)}`))
  })

const waitGone = (pid: number) =>
  Effect.gen(function* () {
    for (let i = 0; i < 100 && isAlive(pid); i++) yield* Effect.sleep("20 millis")
    return !isAlive(pid)
  })

describe("ProcessExecutor", () => {
  it.live("runs the commands joined with && and reports exit 0 with the output", () =>
    Effect.gen(function* () {
      const { execution, out } = yield* startCollecting(spec(["echo one", "echo two", "echo err >&2"]))
      const exit = yield* execution.exit
      expect(exit).toEqual({ exitCode: 0 })
      expect(out.stdout).toBe("one\ntwo\n")
      expect(out.stderr).toBe("err\n")
    }))

  it.live("reports a non-zero exit code and stops at the first failing command", () =>
    Effect.gen(function* () {
      const { execution, out } = yield* startCollecting(spec(["echo before", "exit 7", "echo after"]))
      expect((yield* execution.exit).exitCode).toBe(7)
      expect(out.stdout).toBe("before\n")
    }))

  it.live("gives the job its env and working directory (relative to the repo dir)", () =>
    Effect.gen(function* () {
      const s = spec(['echo "$GREETING $DSTACK_RUN_NAME"', "pwd"], {
        env: { GREETING: "hello world", DSTACK_RUN_NAME: "my-run" },
        workingDir: "sub"
      })
      const { execution, out } = yield* startCollecting(s)
      expect((yield* execution.exit).exitCode).toBe(0)
      const realSub = fs.realpathSync(path.join(s.repoDir, "sub"))
      expect(out.stdout).toBe(`hello world my-run\n${realSub}\n`)
    }))

  it.live("does not hand the job the runner's SSH session, so a job's bash does not read ~/.bashrc as for an SSH login", () =>
    Effect.gen(function* () {
      const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-home-"))
      fs.writeFileSync(path.join(home, ".bashrc"), "echo bashrc-read\n")
      const saved = { HOME: process.env.HOME, SSH_CLIENT: process.env.SSH_CLIENT, SSH_CONNECTION: process.env.SSH_CONNECTION, SHLVL: process.env.SHLVL }
      Object.assign(process.env, { HOME: home, SSH_CLIENT: "10.0.0.1 50000 22", SSH_CONNECTION: "10.0.0.1 50000 10.0.0.2 22", SHLVL: "0" })
      const restore = () => {
        for (const [k, v] of Object.entries(saved)) v === undefined ? delete process.env[k] : (process.env[k] = v)
      }
      const run = (s: Executor.ExecutionSpec) =>
        Effect.gen(function* () {
          const outs: Array<string> = []
          const started = yield* ProcessExecutor.make({ shell: "/bin/bash" }).start(s, {
            log: (_stream, bytes) => void outs.push(new TextDecoder().decode(bytes))
          })
          yield* started.exit
          return outs.join("")
        })
      const result = yield* Effect.ensuring(
        Effect.all([
          run(spec(['echo "job ${SSH_CLIENT-unset}"'])),
          // A job that sets the variable itself keeps it.
          run(spec(['echo "job $SSH_CLIENT"'], { env: { SSH_CLIENT: "mine" } }))
        ]),
        Effect.sync(restore)
      )
      expect(result[0]).toBe("job unset\n")
      expect(result[1]).toMatch(/job mine\n$/)
    }))

  it.live("delivers every line, in order", () =>
    Effect.gen(function* () {
      const { execution, out } = yield* startCollecting(spec(["i=1; while [ $i -le 3000 ]; do echo line$i; i=$((i+1)); done"]))
      expect((yield* execution.exit).exitCode).toBe(0)
      const lines = out.stdout.trimEnd().split("\n")
      expect(lines).toHaveLength(3000)
      expect(lines.every((line, i) => line === `line${i + 1}`)).toBe(true)
    }))

  it.live("stop sends SIGTERM to the whole tree: the grandchild is gone too", () =>
    Effect.gen(function* () {
      const { execution, out } = yield* startCollecting(spec(['sleep 300 & echo "grandchild=$!"; sleep 300']))
      const [, pid] = yield* waitForOutput(out, /grandchild=(\d+)/)
      expect(isAlive(Number(pid))).toBe(true)
      const exit = yield* execution.stop("10 seconds")
      expect(exit.endedBy).toBe("stop")
      expect(exit.exitCode).toBe(128 + os.constants.signals.SIGTERM)
      expect(yield* waitGone(Number(pid))).toBe(true)
    }))

  it.live("stop lets the job handle SIGTERM and keeps what it prints on the way out", () =>
    Effect.gen(function* () {
      const { execution, out } = yield* startCollecting(
        spec(["trap 'echo cleaning up; exit 3' TERM; echo started; while :; do sleep 0.05; done"])
      )
      yield* waitForOutput(out, /started/)
      const exit = yield* execution.stop("10 seconds")
      expect(exit).toEqual({ exitCode: 3, endedBy: "stop" })
      expect(out.stdout).toBe("started\ncleaning up\n")
    }))

  it.live("stop kills with SIGKILL once the grace period is over", () =>
    Effect.gen(function* () {
      const { execution, out } = yield* startCollecting(spec(["trap '' TERM; echo started; while :; do sleep 0.05; done"]))
      yield* waitForOutput(out, /started/)
      const started = Date.now()
      const exit = yield* execution.stop("400 millis")
      expect(Date.now() - started).toBeGreaterThanOrEqual(380)
      expect(exit).toEqual({ exitCode: 128 + os.constants.signals.SIGKILL, endedBy: "stop" })
    }))

  it.live("abort kills the tree at once", () =>
    Effect.gen(function* () {
      const { execution, out } = yield* startCollecting(spec(["trap '' TERM; sleep 300 & echo \"grandchild=$!\"; sleep 300"]))
      const [, pid] = yield* waitForOutput(out, /grandchild=(\d+)/)
      const started = Date.now()
      const exit = yield* execution.abort
      expect(Date.now() - started).toBeLessThan(2_000)
      expect(exit).toEqual({ exitCode: 128 + os.constants.signals.SIGKILL, endedBy: "abort" })
      expect(yield* waitGone(Number(pid))).toBe(true)
    }))

  it.live("reports the usage of the job's processes", () =>
    Effect.gen(function* () {
      const { execution, out } = yield* startCollecting(spec(["echo started; sleep 300"]))
      yield* waitForOutput(out, /started/)
      const usage = yield* execution.usage
      expect(usage.memoryUsageBytes).toBeGreaterThan(0)
      yield* execution.abort
    }))

  it.live("fails with an error naming working_dir when it does not exist", () =>
    Effect.gen(function* () {
      const result = yield* Effect.exit(startCollecting(spec(["true"], { workingDir: "missing" })))
      expect(Exit.isFailure(result)).toBe(true)
      if (Exit.isFailure(result)) {
        expect(String(result.cause)).toMatch(/working_dir .*missing does not exist/)
      }
    }))
})

describe("ProcessExecutor: a job dies with its runner", () => {
  it("kills the job's whole process group when the process that started it is killed with SIGKILL", async () => {
    const host = fileURLToPath(new URL("./fixtures/host.ts", import.meta.url))
    const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined"
    const child = spawn(isDeno ? "node" : process.execPath, ["--import", "tsx", host, "sleep 300 & wait"], { stdio: ["ignore", "pipe", "inherit"] })
    const pgid = await new Promise<number>((resolve, reject) => {
      let out = ""
      child.stdout!.on("data", (d) => {
        out += String(d)
        if (out.includes("\n")) resolve(Number(out.trim()))
      })
      child.once("exit", () => reject(new Error("the host exited before it started the job")))
    })
    for (let i = 0; i < 100 && groupMembers(pgid).length < 2; i++) await new Promise((r) => setTimeout(r, 50))
    expect(groupMembers(pgid).length, "the shell and its sleep").toBeGreaterThanOrEqual(2)
    child.kill("SIGKILL")
    for (let i = 0; i < 100 && groupMembers(pgid).length > 0; i++) await new Promise((r) => setTimeout(r, 50))
    expect(groupMembers(pgid)).toEqual([])
  }, 60_000)

  it("kills the groups of every job still running, through one watchdog, and only those", async () => {
    const host = fileURLToPath(new URL("./fixtures/host.ts", import.meta.url))
    const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined"
    const child = spawn(isDeno ? "node" : process.execPath, ["--import", "tsx", host, "true", "sleep 300 & wait", "sleep 301 & wait"], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    const pgids = await new Promise<Array<number>>((resolve, reject) => {
      let out = ""
      child.stdout!.on("data", (d) => {
        out += String(d)
        if (out.includes("\n")) resolve(out.trim().split(" ").map(Number))
      })
      child.once("exit", () => reject(new Error("the host exited before it started the jobs")))
    })
    expect(pgids).toHaveLength(3)
    const [ended, ...running] = pgids as [number, number, number]
    for (let i = 0; i < 100 && running.some((g) => groupMembers(g).length < 2); i++) await new Promise((r) => setTimeout(r, 50))
    for (const g of running) expect(groupMembers(g).length, `group ${g}: the shell and its sleep`).toBeGreaterThanOrEqual(2)
    expect(groupMembers(ended)).toEqual([])
    // One watchdog for the executor: the host's children are the two jobs' shells and one sh.
    const children = fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, "utf8").trim().split(/\s+/).map(Number)
    const watchdogs = children.filter((pid) => !pgids.includes(pid))
    expect(watchdogs, "watchdog processes of the host").toHaveLength(1)
    child.kill("SIGKILL")
    for (let i = 0; i < 100 && running.some((g) => groupMembers(g).length > 0); i++) await new Promise((r) => setTimeout(r, 50))
    for (const g of running) expect(groupMembers(g), `group ${g}`).toEqual([])
  }, 60_000)
})
