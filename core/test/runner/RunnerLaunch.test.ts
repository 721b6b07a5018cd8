// RunnerLaunch, what a backend uses to start a runner build: bundled into one file (with the
// sha256 of its bytes), spawned with the command of this runtime, read up to its ready line,
// terminated with SIGTERM; and a start that fails says why with the end of its stderr. A
// script bundle started by the sh start (RunnerSnapshot) builds a startup snapshot on its first
// start and starts from it afterwards; a snapshot node cannot load falls back with a line.
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { bundleRunner } from "../../src/runner/launch/RunnerBundle.ts"
import * as RunnerCommand from "../../src/runner/launch/RunnerCommand.ts"
import { parseAddress, StartFailure, startRunner } from "../../src/runner/launch/RunnerProcess.ts"
import { runnerArgs } from "../../src/runner/launch/RunnerProgram.ts"
import { runnerStartScript } from "../../src/runner/launch/RunnerSnapshot.ts"
import { tmpDir } from "./support.ts"

const BUILD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "fixtures/runner-build.ts")
const BUILD_TLA = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "fixtures/runner-build-tla.ts")

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe("RunnerLaunch", () => {
  it("bundles a runner build into one file with its sha256, starts it, reads the ready line, and terminates it", async () => {
    const out = tmpDir("dstack-ts-bundle-")
    const bundle = await bundleRunner(BUILD, out)
    expect(path.dirname(bundle.file)).toBe(out)
    expect(bundle.file).toMatch(/runner-\d+-[0-9a-f]{8}\.mjs$/)
    expect(bundle.sha256).toBe(createHash("sha256").update(fs.readFileSync(bundle.file)).digest("hex"))

    // The bundle runs with plain node, from any directory.
    const command = RunnerCommand.node(bundle.file, runnerArgs({ host: "127.0.0.1", port: 0, workDir: tmpDir("dstack-ts-launch-") }))
    expect(command.args).toEqual([bundle.file, "--host", "127.0.0.1", "--port", "0", "--work-dir", expect.any(String)])
    const starting = startRunner(command, 60_000)
    const runner = await starting.ready
    expect(runner.host).toBe("127.0.0.1")
    const health = await (await fetch(`http://127.0.0.1:${runner.port}/api/healthcheck`)).json()
    expect(health.service).toBe("dstack-ts-runner")
    await runner.terminate(10_000)
    expect(runner.hasExited()).toBe(true)
    expect(alive(runner.pid)).toBe(false)
  }, 90_000)

  it("a runner build that refuses its plugins fails the start with its stderr, and nothing is left running", async () => {
    const command = RunnerCommand.forRuntime()(BUILD, runnerArgs({ host: "127.0.0.1", port: 0, workDir: tmpDir("dstack-ts-launch-") }))
    const previous = process.env.RUNNER_FIXTURE_PLUGIN
    process.env.RUNNER_FIXTURE_PLUGIN = "incompatible"
    const starting = startRunner(command, 60_000)
    if (previous === undefined) delete process.env.RUNNER_FIXTURE_PLUGIN
    else process.env.RUNNER_FIXTURE_PLUGIN = previous
    const failure = await starting.ready.then(() => undefined, (e: unknown) => e)
    expect(failure).toBeInstanceOf(StartFailure)
    expect((failure as StartFailure).kind).toBe("exited")
    expect((failure as StartFailure).message).toContain("exited with status 2 before it was ready")
    expect((failure as StartFailure).message).toContain("@acme/executor-future@3.0.0 requires @dstack-ts/core ^9.0.0")
    expect(alive(starting.child.pid!)).toBe(false)
  }, 90_000)

  it("reads the ready line strictly", () => {
    expect(parseAddress(`{"host":"127.0.0.1","port":41234}`)).toEqual({ host: "127.0.0.1", port: 41234 })
    expect(parseAddress(`{"host":"127.0.0.1","port":0}`)).toBeUndefined()
    expect(parseAddress(`{"port":41234}`)).toBeUndefined()
    expect(parseAddress("listening on 41234")).toBeUndefined()
  })
})

describe("RunnerLaunch: the sh start, from a startup snapshot", () => {
  // The node binary the start runs (under Deno too: a runner bundle runs on Node).
  const nodeBin = execFileSync("sh", ["-c", "command -v node"], { encoding: "utf8" }).trim()
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
  const until = async <A>(what: string, probe: () => A | undefined, ms = 90_000): Promise<A> => {
    for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) {
      const value = probe()
      if (value !== undefined) return value
    }
    throw new Error(`timed out waiting for ${what}`)
  }
  /** Starts the bundle with the sh start; answers the sh process, the runner's port and pid, and its output file. */
  const start = async (bundle: string) => {
    const dir = tmpDir("dstack-ts-snapstart-")
    const out = path.join(dir, "out")
    const script = runnerStartScript({ out: `"$1"`, node: `"$2"`, bundle, args: ["--host", "127.0.0.1", "--port", "0", "--work-dir", `"$3"`] })
    const sh: ChildProcess = spawn("sh", ["-c", script, "sh", out, nodeBin, path.join(dir, "work")], { stdio: "ignore" })
    let exited = false
    sh.once("exit", () => { exited = true })
    const port = await until("the ready line", () => {
      const text = fs.existsSync(out) ? fs.readFileSync(out, "utf8") : ""
      const line = text.split("\n").map((l) => parseAddress(l.trim())).find((a) => a !== undefined)
      if (line !== undefined) return line.port
      if (exited) throw new Error(`the start ended before the ready line: ${text}`)
      return undefined
    })
    // The runner is the sh process itself (exec) or, from a snapshot, its child (beside which
    // a snapshot being built may run).
    const cmdline = (pid: number) => fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
    const children = execFileSync("sh", ["-c", `pgrep -P ${sh.pid} || true`], { encoding: "utf8" }).trim().split("\n").filter((l) => l !== "").map(Number)
    const pid = [sh.pid!, ...children].find((p) => cmdline(p).includes("--work-dir"))!
    const args = cmdline(pid)
    const stop = async () => {
      process.kill(pid, "SIGTERM")
      await until("the runner to exit", () => (alive(pid) ? undefined : true), 30_000)
    }
    return { port, pid, args, out, stop }
  }
  const healthy = async (port: number) => (await (await fetch(`http://127.0.0.1:${port}/api/healthcheck`)).json()).service

  let bundle: string
  const blobOf = () => fs.readdirSync(path.dirname(bundle)).filter((f) => f.startsWith(path.basename(bundle) + ".") && f.endsWith(".blob")).map((f) => path.join(path.dirname(bundle), f))[0]

  it("bundles a build without top-level await as a script, and one with it as an ES module", async () => {
    const dir = tmpDir("dstack-ts-bundle-")
    const script = await bundleRunner(BUILD, dir, { snapshot: true })
    expect(script.format).toBe("cjs")
    expect(script.file).toMatch(/\.cjs$/)
    bundle = script.file
    const module = await bundleRunner(BUILD_TLA, dir, { snapshot: true })
    expect(module.format).toBe("esm")
    expect(module.file).toMatch(/\.mjs$/)
  }, 90_000)

  it("starts plainly the first time and builds the snapshot beside the bundle; the next start is from it, and serves", async () => {
    // A build killed with its job left its lock: its process is gone, so the start takes it over.
    const key = execFileSync("sh", ["-c", `echo "$(uname -m).$(stat -L -c %s.%Y "$1")"`, "sh", nodeBin], { encoding: "utf8" }).trim()
    const gone = spawnSync("true").pid
    fs.mkdirSync(`${bundle}.${key}.blob.lock`)
    fs.writeFileSync(`${bundle}.${key}.blob.lock/owner`, `${os.hostname()} ${gone}\n`)
    const first = await start(bundle)
    expect(first.args).not.toContain("--snapshot-blob")
    expect(await healthy(first.port)).toBe("dstack-ts-runner")
    // The snapshot is built (and checked) in the background, then renamed into place.
    const blob = await until("the snapshot", () => blobOf() ?? (fs.readdirSync(path.dirname(bundle)).some((f) => f.endsWith(".failed")) ? "failed" : undefined))
    expect(blob).not.toBe("failed")
    expect(blob).toBe(`${bundle}.${key}.blob`)
    // The build lets go of its lock right after it renames the snapshot into place (the next
    // statement of its shell: the test may look in between).
    await until("the build's lock to go", () => (fs.existsSync(`${bundle}.${key}.blob.lock`) ? undefined : true), 10_000)
    await first.stop()

    const second = await start(bundle)
    expect(second.args.slice(1, 4)).toEqual(["--snapshot-blob", blob, "--"])
    expect(fs.readFileSync(second.out, "utf8")).toContain(`dstack-ts: snapshot: starting from ${blob}\n`)
    expect(await healthy(second.port)).toBe("dstack-ts-runner")
    await second.stop()
  }, 180_000)

  it("a snapshot node cannot load: the start says so in its output, marks it failed and starts without it", async () => {
    const blob = blobOf()!
    fs.writeFileSync(blob, "not a snapshot")
    const broken = await start(bundle)
    expect(broken.args).not.toContain("--snapshot-blob")
    expect(fs.readFileSync(broken.out, "utf8")).toContain(`dstack-ts: snapshot: the runner did not start from ${blob}`)
    expect(fs.existsSync(`${blob}.failed`)).toBe(true)
    expect(await healthy(broken.port)).toBe("dstack-ts-runner")
    await broken.stop()
    // Marked failed: the next start does not try it again.
    const next = await start(bundle)
    expect(next.args).not.toContain("--snapshot-blob")
    expect(fs.readFileSync(next.out, "utf8")).not.toContain("dstack-ts: snapshot:")
    await next.stop()
  }, 120_000)
})
