// RunnerLaunch, what a backend uses to start a runner build: bundled into one file (with the
// sha256 of its bytes), spawned with the command of this runtime, read up to its ready line,
// terminated with SIGTERM; and a start that fails says why with the end of its stderr.
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { bundleRunner } from "../../src/runner/launch/RunnerBundle.ts"
import * as RunnerCommand from "../../src/runner/launch/RunnerCommand.ts"
import { parseAddress, StartFailure, startRunner } from "../../src/runner/launch/RunnerProcess.ts"
import { runnerArgs } from "../../src/runner/launch/RunnerProgram.ts"
import { tmpDir } from "./support.ts"

const BUILD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "fixtures/runner-build.ts")

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
