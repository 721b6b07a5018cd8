// The runner program (Runner.runnerMain, run by a runner build): it prints the ready line with
// the port it bound, answers, and exits 0 on SIGTERM; bad arguments and refused plugins exit 2.
import { spawn } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import * as RunnerCommand from "../../src/runner/launch/RunnerCommand.ts"
import { parseAddress } from "../../src/runner/launch/RunnerProcess.ts"
import { tmpDir } from "./support.ts"

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "fixtures/runner-build.ts")
const isDeno = "Deno" in globalThis
const command = (args: Array<string>): [string, Array<string>] => {
  const c = RunnerCommand.forRuntime()(MAIN, args)
  return [c.file, [...c.args]]
}

const exitOf = (file: string, args: Array<string>, env: Record<string, string> = {}) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => (stdout += d))
    child.stderr.on("data", (d: Buffer) => (stderr += d))
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
  })

describe("runner program", () => {
  it("listens on a free port, reports it on stdout, and exits 0 on SIGTERM", async () => {
    const [file, args] = command(["--port", "0", "--work-dir", tmpDir("dstack-ts-main-")])
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] })
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
      child.on("exit", (code, signal) => resolve({ code, signal }))
    )
    const line = await new Promise<string>((resolve, reject) => {
      let out = ""
      let err = ""
      child.stdout.on("data", (d: Buffer) => {
        out += d
        if (out.includes("\n")) resolve(out.split("\n")[0])
      })
      child.stderr.on("data", (d: Buffer) => {
        err += d
      })
      child.on("exit", () => reject(new Error(`runner exited early: ${err}`)))
    })
    const { host, port } = JSON.parse(line)
    expect(parseAddress(line)).toEqual({ host, port })
    expect(host).toBe("127.0.0.1")
    expect(port).toBeGreaterThan(0)
    const health = await (await fetch(`http://127.0.0.1:${port}/api/healthcheck`)).json()
    expect(health.service).toBe("dstack-ts-runner")
    child.kill("SIGTERM")
    const exit = await exited
    // Deno's child_process reports a child it signalled as killed by that signal even when the
    // child handled it and exited 0; Node reports the real exit status.
    if (isDeno) expect([exit.code, exit.signal === "SIGTERM" ? 0 : exit.signal]).toContain(0)
    else expect(exit).toEqual({ code: 0, signal: null })
    const after = await fetch(`http://127.0.0.1:${port}/api/healthcheck`).then(() => "answered", () => "refused")
    expect(after).toBe("refused")
  })

  it("refuses a bad port with a clear message and exit status 2", async () => {
    const [file, args] = command(["--port", "99999", "--work-dir", tmpDir("dstack-ts-main-")])
    const { code, stdout, stderr } = await exitOf(file, args)
    expect(code).toBe(2)
    expect(stderr).toContain("--port must be 0..65535, got 99999")
    expect(stdout).toBe("")
  })

  it("refuses an unknown argument and exit status 2, with the usage", async () => {
    const [file, args] = command(["--prot", "0"])
    const { code, stderr } = await exitOf(file, args)
    expect(code).toBe(2)
    expect(stderr).toContain("--prot")
    expect(stderr).toContain("usage: runner [--port N] [--host ADDR] [--work-dir DIR]")
  })

  it("refuses a plugin for another core before it listens, naming the plugin (exit status 2)", async () => {
    const [file, args] = command(["--port", "0", "--work-dir", tmpDir("dstack-ts-main-")])
    const { code, stdout, stderr } = await exitOf(file, args, { RUNNER_FIXTURE_PLUGIN: "incompatible" })
    expect(code).toBe(2)
    expect(stdout).toBe("")
    expect(stderr).toContain("@acme/executor-future@3.0.0 requires @dstack-ts/core ^9.0.0")
  })
})
