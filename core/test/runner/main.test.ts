// The runner program: it prints the port it bound, answers, and exits on SIGTERM.
import { spawn } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { tmpDir } from "./support.ts"

const MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../src/runner/main.ts")
const isDeno = "Deno" in globalThis
const command = (args: Array<string>): [string, Array<string>] =>
  isDeno ? [process.execPath, ["run", "-A", MAIN, ...args]] : [process.execPath, ["--import", "tsx", MAIN, ...args]]

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
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] })
    let err = ""
    child.stderr.on("data", (d: Buffer) => {
      err += d
    })
    const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)))
    expect(code).toBe(2)
    expect(err).toContain("--port must be 0..65535, got 99999")
  })
})
