// The newcomer's path through the real CLI: `dstack server` (the default build) in one process,
// then `dstack apply -f … -y` from a directory whose files the job reads, `dstack ps`,
// `dstack logs`, a failing run that exits non-zero with its reason, and configurations with keys
// this build does not carry out yet, refused at their line before anything is uploaded.
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"

import { CLI } from "../support/cli.ts"
import { freeNamedPorts } from "../support/ports.ts"
const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-cli-e2e-"))
const env = { ...process.env, HOME: home, DSTACK_SERVER_DIR: path.join(home, "server"), NO_COLOR: "1" }
let server: ChildProcess

const dstack = (args: ReadonlyArray<string>, cwd: string, extraEnv: Record<string, string> = {}) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env: { ...env, ...extraEnv } })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })

const writeProject = (name: string, yaml: string, files: Record<string, string>) => {
  const dir = path.join(home, name)
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, ".dstack.yml"), yaml)
  for (const [file, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, file), content)
  return dir
}

const small = "resources:\n  cpu: 1..\n  memory: 1GB..\n  disk: 1GB..\n"

beforeAll(async () => {
  server = spawn(process.execPath, [CLI, "server", "--port", "0"], { env })
  await new Promise<void>((resolve, reject) => {
    let out = ""
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}`)), 90_000)
    const onData = (d: Buffer) => {
      out += d
      if (/running at http/.test(out)) {
        clearTimeout(timer)
        resolve()
      }
    }
    server.stdout!.on("data", onData)
    server.stderr!.on("data", onData)
  })
}, 120_000)

afterAll(async () => {
  server?.kill("SIGTERM")
  await new Promise((r) => server?.once("exit", r))
  fs.rmSync(home, { recursive: true, force: true })
}, 30_000)

describe("dstack CLI end to end", () => {
  it("applies a task whose commands read the uploaded code, and exits 0", async () => {
    const dir = writeProject("ok", `type: task\nname: cli-ok\ncommands:\n  - cat data.txt\n  - echo done here\n${small}`, { "data.txt": "payload from the client\n" })
    const res = await dstack(["apply", "-f", ".dstack.yml", "-y"], dir)
    expect(res.stderr).not.toMatch(/✗/)
    expect(res.code).toBe(0)
    expect(res.stdout).toContain("payload from the client")
    expect(res.stdout).toContain("done here")
    expect(res.stdout).toMatch(/BACKEND[\s\S]*local/)
  }, 90_000)

  it("exits 1 with the reason when the job fails", async () => {
    const dir = writeProject("bad", `type: task\nname: cli-bad\ncommands:\n  - echo failing now\n  - exit 7\n${small}`, {})
    const res = await dstack(["apply", "-f", ".dstack.yml", "-y"], dir)
    expect(res.code).toBe(1)
    expect(res.stdout).toContain("failing now")
    expect(res.stderr).toMatch(/cli-bad failed: job_failed, container_exited_with_error, exit status 7/)
  }, 90_000)

  it("shows the plan with its executor, and refuses to submit when no offer fits", async () => {
    const dir = writeProject("nogpu", `type: task\nname: cli-nogpu\ncommands: [nvidia-smi]\nresources:\n  gpu: H100:8\n`, {})
    const res = await dstack(["apply", "-f", ".dstack.yml", "-y"], dir)
    expect(res.code).toBe(1)
    expect(res.stdout).toContain("Executor: process")
    expect(res.stderr).toMatch(/No offers: .*gpu/)
    const ps = await dstack(["ps", "-a"], home)
    expect(ps.stdout).not.toContain("cli-nogpu")
  }, 60_000)

  it("reports a bad configuration with file:line:column and does not submit", async () => {
    const dir = writeProject("invalid", "type: task\ncommand:\n  - echo typo\n", {})
    const res = await dstack(["apply", "-f", ".dstack.yml", "-y"], dir)
    expect(res.code).toBe(1)
    expect(res.stderr).toMatch(/\.dstack\.yml:2:1/)
    expect(res.stderr).toMatch(/did you mean `commands`/)
  }, 60_000)

  it("refuses keys this build does not carry out yet at their line, before uploading anything", async () => {
    const dir = writeProject("unsupported", `type: service\nname: cli-unsupported\ncommands: [python3 -m http.server 8000]\nport: "8080:8000"\ngateway: my-gateway\nhttps: false\n${small}`, {})
    const res = await dstack(["apply", "-f", ".dstack.yml", "-y"], dir)
    expect(res.code).toBe(1)
    expect(res.stderr).toMatch(/\.dstack\.yml: 3 problems in the configuration/)
    expect(res.stderr).toMatch(/\.dstack\.yml:4:1 {2}port {2}the local part of `port` \(8080:8000\) is not supported: .*the server is the gateway here/)
    expect(res.stderr).toMatch(/\.dstack\.yml:5:1 {2}gateway {2}`gateway` is not supported: the server is the gateway here/)
    expect(res.stderr).toMatch(/\.dstack\.yml:6:1 {2}https {2}`https: false` is not supported: the server is the gateway here/)
    expect(res.stdout + res.stderr).not.toMatch(/Uploading|Getting the run plan/)
    const ps = await dstack(["ps", "-a"], home)
    expect(ps.stdout).not.toContain("cli-unsupported")
  }, 60_000)

  it("takes upstream's overrides: the plan shows them and the job sees -e variables", async () => {
    const dir = writeProject("overrides", `type: task\nname: cli-overrides\nenv:\n  FROM_FILE: file\n  SHARED: file\nspot_policy: spot\ncommands:\n  - echo "vars $FROM_FILE $SHARED $FROM_LOCAL"\n${small}`, {})
    const res = await dstack(
      ["apply", "-y", "-e", "SHARED=cli", "--env", "FROM_LOCAL", "--max-price", "5", "--max-duration", "1h", "--spot-auto", "-b", "local",
        "--idle-duration", "10m", "--retry-duration", "30m", "--cpu", "1..", "--memory", "1GB..", "--disk", "1GB.."],
      dir,
      { FROM_LOCAL: "local-value" }
    )
    expect(res.code, res.stderr).toBe(0)
    // The plan lists what the server planned with: the arguments over the file's keys.
    expect(res.stdout).toMatch(/Resources\s+cpu=1\.\. memory=1GB\.\. disk=1GB\.\./)
    expect(res.stdout).toMatch(/Spot policy\s+auto/)
    expect(res.stdout).toMatch(/Max price\s+\$5/)
    expect(res.stdout).toMatch(/Max duration\s+1h/)
    expect(res.stdout).toMatch(/Idle duration\s+10m/)
    expect(res.stdout).toMatch(/Retry\s+no-capacity, interruption, error for 30m/)
    expect(res.stdout).toMatch(/Backends\s+local/)
    expect(res.stdout).toMatch(/Env\s+FROM_FILE, SHARED, FROM_LOCAL/)
    // -e merges into env: the file's variable stays, the argument's wins, -e KEY reads the local one.
    expect(res.stdout).toContain("vars file cli local-value")
  }, 90_000)

  it("--fleet NAME considers only that fleet's instances: an unknown one gives no offers", async () => {
    const dir = writeProject("fleet-arg", `type: task\nname: cli-fleet-arg\ncommands: [echo never]\n${small}`, {})
    const res = await dstack(["apply", "-y", "--fleet", "no-such-fleet"], dir)
    expect(res.code).toBe(1)
    expect(res.stdout).toMatch(/Fleets\s+no-such-fleet/)
    expect(res.stderr).toMatch(/No offers: .*fleets/)
    const ps = await dstack(["ps", "-a"], home)
    expect(ps.stdout).not.toContain("cli-fleet-arg")
  }, 60_000)

  it("refuses bad override values, keys this build does not carry out and run-only arguments for a fleet, naming the argument", async () => {
    const dir = writeProject("overrides-bad", `type: task\nname: cli-overrides-bad\ncommands: [echo never]\n${small}`, {})
    fs.writeFileSync(path.join(dir, "fleet.dstack.yml"), "type: fleet\nname: cli-args-fleet\nssh_config:\n  user: u\n  identity_file: /dev/null\n  hosts: [192.0.2.1]\n")
    // The values themselves are checked in cli/test/apply-args.test.ts; here, the command's exit and its refusal before any upload.
    const cases: ReadonlyArray<[ReadonlyArray<string>, number, RegExp]> = [
      [["--max-price", "abc"], 2, /argument --max-price: expected a price in dollars per hour .*"abc"/],
      [["-e", "=x"], 2, /argument -e\/--env: expected KEY=VALUE or KEY .*"=x"/],
      [["--max-duration", "5parsecs"], 2, /argument --max-duration: expected a duration .*"5parsecs"/],
      [["--reuse"], 1, /argument -R\/--reuse: `creation_policy: reuse` is not supported yet/],
      [["-f", "fleet.dstack.yml", "--gpu", "A100"], 2, /Unrecognized arguments for a fleet configuration: --gpu/]
    ]
    const results = await Promise.all(cases.map(([args]) => dstack(["apply", "-y", ...args], dir)))
    cases.forEach(([args, code, message], i) => {
      expect(results[i].stderr, args.join(" ")).toMatch(message)
      expect(results[i].code, args.join(" ")).toBe(code)
      expect(results[i].stdout + results[i].stderr).not.toMatch(/Uploading|Getting the run plan/)
    })
  }, 90_000)

  it("lists offers for given resources and explains when none fits", async () => {
    const ok = await dstack(["offer", "--cpu", "1..", "--memory", "1GB..", "--disk", "1GB.."], home)
    expect(ok.code, ok.stderr).toBe(0)
    expect(ok.stdout).toMatch(/BACKEND[\s\S]*local[\s\S]*\$0/)
    const none = await dstack(["offer", "--gpu", "H100:8"], home)
    expect(none.code).toBe(1)
    expect(none.stderr).toMatch(/No offers: .*gpu/)
    const bad = await dstack(["offer", "--memory", "lots"], home)
    expect(bad.code).toBe(2)
  }, 60_000)

  it("runs the runner agent on its own, answering its health check", async () => {
    const runner = spawn(process.execPath, [CLI, "runner", "--port", "0"], { env })
    const line = await new Promise<string>((resolve, reject) => {
      let out = ""
      runner.stdout.on("data", (d) => {
        out += d
        if (out.includes("\n")) resolve(out.split("\n")[0])
      })
      runner.on("exit", (code) => reject(new Error(`runner exited with ${code}`)))
    })
    const { host, port } = JSON.parse(line)
    const health = await fetch(`http://${host}:${port}/api/healthcheck`)
    expect((await health.json()).service).toBe("dstack-ts-runner")
    runner.kill("SIGTERM")
    expect(await new Promise((r) => runner.once("exit", (code, signal) => r(code ?? signal)))).toBeDefined()
  }, 60_000)

  it("attaches to a run: its port is reachable on localhost until Ctrl-C", async () => {
    const local = await freeNamedPorts(2)
    const dir = writeProject("web", `type: task\nname: cli-web\nports: ["${local}:${local + 1}"]\ncommands:\n  - cd site && exec python3 -m http.server ${local + 1} --bind 127.0.0.1\n${small}`, {})
    fs.mkdirSync(path.join(dir, "site"))
    fs.writeFileSync(path.join(dir, "site", "index.html"), "hello through attach\n")
    const submitted = await dstack(["apply", "-f", ".dstack.yml", "-y", "-d"], dir)
    expect(submitted.code, submitted.stderr).toBe(0)
    const attach = spawn(process.execPath, [CLI, "attach", "cli-web"], { cwd: home, env })
    let out = ""
    attach.stdout.on("data", (d) => (out += d))
    attach.stderr.on("data", (d) => (out += d))
    const start = Date.now()
    while (!out.includes(`→ http://127.0.0.1:${local}`) && Date.now() - start < 60_000) await new Promise((r) => setTimeout(r, 100))
    expect(out).toContain(`${local + 1} → http://127.0.0.1:${local}`)
    let body = ""
    for (let i = 0; i < 50 && body === ""; i++) {
      body = await fetch(`http://127.0.0.1:${local}/index.html`).then((r) => r.text()).catch(() => "")
      if (body === "") await new Promise((r) => setTimeout(r, 100))
    }
    expect(body).toBe("hello through attach\n")
    attach.kill("SIGINT")
    await new Promise((r) => attach.once("exit", r))
    expect(out).toContain("Detached from cli-web")
    const stop = await dstack(["stop", "cli-web", "-x", "-y"], home)
    expect(stop.code, stop.stderr).toBe(0)
  }, 90_000)

  it("forwards the run's ports while apply follows it, and Ctrl-C detaches leaving the run running", async () => {
    const local = await freeNamedPorts(2)
    const dir = writeProject("web-apply", `type: task\nname: cli-web-apply\nports: ["${local}:${local + 1}"]\ncommands:\n  - echo serving\n  - cd site && exec python3 -m http.server ${local + 1} --bind 127.0.0.1\n${small}`, {})
    fs.mkdirSync(path.join(dir, "site"))
    fs.writeFileSync(path.join(dir, "site", "index.html"), "hello while applying\n")
    const apply = spawn(process.execPath, [CLI, "apply", "-f", ".dstack.yml", "-y"], { cwd: dir, env })
    let stdout = ""
    let stderr = ""
    apply.stdout.on("data", (d) => (stdout += d))
    apply.stderr.on("data", (d) => (stderr += d))
    // Deno's child_process reports an exit status of 128 + n as signal n, so accept either.
    const exited = new Promise<number | string | null>((r) => apply.once("exit", (code, signal) => r(code ?? (signal === "SIGINT" ? 130 : signal))))
    const start = Date.now()
    while (!stderr.includes(`Port ${local + 1} forwarded to http://127.0.0.1:${local}`) && Date.now() - start < 60_000) {
      await new Promise((r) => setTimeout(r, 100))
    }
    expect(stderr).toContain(`Port ${local + 1} forwarded to http://127.0.0.1:${local}`)
    let body = ""
    for (let i = 0; i < 50 && body === ""; i++) {
      body = await fetch(`http://127.0.0.1:${local}/index.html`).then((r) => r.text()).catch(() => "")
      if (body === "") await new Promise((r) => setTimeout(r, 100))
    }
    expect(body).toBe("hello while applying\n")
    // The job's output stays on stdout, the forwarding messages on stderr.
    expect(stdout).toContain("serving")
    expect(stdout).not.toContain("forwarded")
    apply.kill("SIGINT")
    expect(await exited).toBe(130)
    expect(stderr).toContain("Detached from cli-web-apply; it keeps running")
    // The forwarded port is closed with the CLI; the run itself still runs.
    const after = await fetch(`http://127.0.0.1:${local}/index.html`).then(() => "answered", () => "refused")
    expect(after).toBe("refused")
    const ps = await dstack(["ps"], home)
    expect(ps.stdout).toMatch(/cli-web-apply[^\n]*running/)
    const stop = await dstack(["stop", "cli-web-apply", "-x", "-y"], home)
    expect(stop.code, stop.stderr).toBe(0)
  }, 90_000)

  it("lists runs with ps -a and prints a finished run's log", async () => {
    const ps = await dstack(["ps", "-a"], home)
    expect(ps.code).toBe(0)
    expect(ps.stdout).toMatch(/cli-ok[\s\S]*done/)
    expect(ps.stdout).toMatch(/cli-bad[\s\S]*failed/)
    const logs = await dstack(["logs", "cli-ok"], home)
    expect(logs.code).toBe(0)
    expect(logs.stdout).toBe("payload from the client\ndone here\n")
  }, 60_000)
})
