// The server's SSH proxy with OpenSSH's client against a real job of the local backend:
// `ssh -N -L` with the run owner's key (from get_my_user) or the run spec's ssh_key_pub reaches
// the job's port and, at upstream's runner port 10999, the runner's API; runs answers advertise
// the proxy; a wrong key, a user name naming no job, the owner's key once refreshed and a
// finished job are refused. The `ssh RUN` alias pins the proxy's host key (get_info's
// sshproxy_host_keys): OpenSSH refuses another key.
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { fetchSshAccess, writeRunSshHost } from "../../client/src/SshConfig.ts"
import { startSshProxy } from "../../core/src/server/SshProxy.ts"
import { type ProxyServer, proxySshArgs, runSsh, startProxyServer, task, waitJobRunning } from "../support/sshProxy.ts"
import { freeNamedPorts } from "../support/ports.ts"

const TOKEN = "sshproxy-e2e-token"
const hasSsh = spawnSync("ssh", ["-V"]).status === 0
if (!hasSsh) console.warn("sshproxy.test.ts: SKIPPED, no OpenSSH client (ssh)")
let proxy: ProxyServer

const sshArgs = (key: string) => proxySshArgs(key, proxy.server.sshProxy!.port, "INFO")

/** `ssh … user@127.0.0.1 command`: its exit code and output. */
const sshRun = (key: string, user: string, command: string) => runSsh([...sshArgs(key), `${user}@127.0.0.1`, command])

/** Fetches `url` until it answers (the forward comes up after ssh authenticates). */
const fetchText = async (url: string) => {
  for (let i = 0; i < 100; i++) {
    const text = await fetch(url, { signal: AbortSignal.timeout(5000) }).then((r) => r.text()).catch(() => undefined)
    if (text !== undefined) return text
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`${url} never answered`)
}

beforeAll(async () => {
  if (!hasSsh) return
  proxy = await startProxyServer({ token: TOKEN, hostname: "proxy.example", prefix: "sshproxy-e2e-" })
}, 180_000)

afterAll(async () => {
  await proxy?.close()
})

describe.skipIf(!hasSsh)("the SSH proxy", () => {
  it("keeps its host key in the given file, mode 0600", () => {
    const file = path.join(proxy.dir, "sshproxy_host_key")
    expect(fs.statSync(file).mode & 0o777).toBe(0o600)
    expect(proxy.server.sshProxy!.hostPublicKey).toMatch(/^ssh-rsa AAAA/)
  })

  it("forwards a running job's port and the runner's port to the run owner's key, and refuses the rest", async () => {
    const jobPort = await freeNamedPorts()
    await proxy.client.runs.submit(
      task([`mkdir -p www && echo served-through-the-proxy > www/index.html && cd www && exec python3 -m http.server ${jobPort} --bind 127.0.0.1`], { ports: [jobPort] }),
      { runName: "proxied" }
    )
    const run = await waitJobRunning(proxy.api, "proxied")
    const info = run.jobs[0].job_connection_info
    const upstreamId = run.jobs[0].job_submissions.at(-1).id.replace(/-/g, "")
    expect(info).toEqual({ sshproxy_hostname: "proxy.example", sshproxy_port: proxy.server.sshProxy!.port, sshproxy_upstream_id: upstreamId })
    const listed = await proxy.api("/api/runs/list", { project_name: "main" })
    expect(listed.find((r: any) => r.run_spec.run_name === "proxied").jobs[0].job_connection_info.sshproxy_upstream_id).toBe(upstreamId)

    const local = await freeNamedPorts()
    const runnerLocal = local + 1
    const unexposed = local + 2
    const tunnel = spawn("ssh", [
      ...sshArgs(proxy.ownerKey), "-N", "-L", `127.0.0.1:${local}:localhost:${jobPort}`, "-L", `127.0.0.1:${runnerLocal}:localhost:10999`,
      "-L", `127.0.0.1:${unexposed}:localhost:${proxy.server.sshProxy!.port}`, `${upstreamId}_root@127.0.0.1`
    ])
    let tunnelOut = ""
    tunnel.stderr.on("data", (d) => (tunnelOut += d))
    try {
      expect(await fetchText(`http://127.0.0.1:${local}/index.html`)).toBe("served-through-the-proxy\n")
      expect(JSON.parse(await fetchText(`http://127.0.0.1:${runnerLocal}/api/healthcheck`))).toMatchObject({ service: "dstack-ts-runner" })
      // A port the job does not expose (here the proxy's own) gets no channel: the connection closes.
      await expect(fetch(`http://127.0.0.1:${unexposed}/`, { signal: AbortSignal.timeout(5000) })).rejects.toThrow(/fetch failed/)
    } finally {
      tunnel.kill("SIGTERM")
      await new Promise((r) => tunnel.once("exit", r))
    }
    expect(tunnelOut).not.toMatch(/denied/i)
    expect(tunnelOut).toMatch(/open failed/)

    // A command runs where the job runs (the shells themselves: sshproxy-shell.test.ts).
    const command = await sshRun(proxy.ownerKey, `${upstreamId}_root`, "echo run=$DSTACK_RUN_NAME; exit 3")
    expect(command.stdout).toContain("run=proxied")
    expect(command.code).toBe(3)

    const stranger = await sshRun(proxy.strangerKey, `${upstreamId}_root`, "true")
    expect(stranger.code).toBe(255)
    expect(stranger.stderr).toContain("Permission denied (publickey)")
    const nobody = await sshRun(proxy.ownerKey, `${"0".repeat(32)}_root`, "true")
    expect(nobody.code).toBe(255)
    expect(nobody.stderr).toContain("Permission denied (publickey)")
    const malformed = await sshRun(proxy.ownerKey, "root", "true")
    expect(malformed.code).toBe(255)
    expect(malformed.stderr).toContain("Permission denied (publickey)")

    await proxy.client.runs.stop(["proxied"], { abort: true })
    for (let i = 0; i < 300; i++) {
      const r = await proxy.api("/api/project/main/runs/get", { run_name: "proxied" })
      if (r.jobs[0].job_submissions.at(-1).status !== "running") break
      await new Promise((r) => setTimeout(r, 100))
    }
    const stopped = await sshRun(proxy.ownerKey, `${upstreamId}_root`, "true")
    expect(stopped.code).toBe(255)
    expect(stopped.stderr).toContain("Permission denied (publickey)")
  }, 90_000)

  it("also admits the run spec's ssh_key_pub", async () => {
    const jobPort = await freeNamedPorts()
    const submitted = await proxy.api("/api/project/main/runs/submit", {
      run_spec: {
        run_name: "proxied-spec-key",
        repo_id: "sshproxy-e2e",
        repo_data: { repo_type: "virtual" },
        ssh_key_pub: proxy.strangerPublic,
        configuration: { type: "task", commands: [`exec python3 -m http.server ${jobPort} --bind 127.0.0.1`], ports: [jobPort], resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } }
      }
    })
    expect(submitted.run_spec.ssh_key_pub).toBe(proxy.strangerPublic)
    const run = await waitJobRunning(proxy.api, "proxied-spec-key")
    const upstreamId = run.jobs[0].job_connection_info.sshproxy_upstream_id
    const local = await freeNamedPorts()
    const tunnel = spawn("ssh", [...sshArgs(proxy.strangerKey), "-N", "-L", `127.0.0.1:${local}:localhost:10999`, `${upstreamId}_root@127.0.0.1`])
    try {
      expect(JSON.parse(await fetchText(`http://127.0.0.1:${local}/api/healthcheck`))).toMatchObject({ service: "dstack-ts-runner" })
      // The owner's key is admitted too, until refreshed (refresh_ssh_key): then the old key,
      // admitted a moment before, is refused, and the new one admitted. (A run whose spec took
      // the owner's key at submission, as the first test's, keeps admitting that key.)
      expect((await sshRun(proxy.ownerKey, `${upstreamId}_root`, "exit 5")).code).toBe(5)
      const me = await proxy.api("/api/users/get_my_user", {})
      const refreshed = await proxy.api("/api/users/refresh_ssh_key", { username: me.username })
      const oldKey = await sshRun(proxy.ownerKey, `${upstreamId}_root`, "true")
      expect(oldKey.code).toBe(255)
      expect(oldKey.stderr).toContain("Permission denied (publickey)")
      fs.writeFileSync(proxy.ownerKey, refreshed.ssh_private_key, { mode: 0o600 })
      expect((await sshRun(proxy.ownerKey, `${upstreamId}_root`, "exit 4")).code).toBe(4)
      expect((await sshRun(proxy.strangerKey, `${upstreamId}_root`, "exit 6")).code).toBe(6)
    } finally {
      tunnel.kill("SIGTERM")
      await new Promise((r) => tunnel.once("exit", r))
      await proxy.client.runs.stop(["proxied-spec-key"], { abort: true })
    }
  }, 90_000)

  // Last: it replaces the server's proxy with an impostor on the same port.
  it("pins the proxy's host key in the ssh RUN alias: the alias connects, a proxy presenting another key is refused", async () => {
    const info = await proxy.api("/api/server/get_info", {})
    expect(info.sshproxy_host_keys).toEqual([proxy.server.sshProxy!.hostPublicKey])
    await proxy.client.runs.submit(task(["sleep 600"]), { runName: "pinned" })
    await waitJobRunning(proxy.api, "pinned")
    const home = fs.mkdtempSync(path.join(proxy.dir, "home-"))
    const access = await fetchSshAccess({ url: proxy.serving.url, token: TOKEN, project: "main" }, "pinned")
    expect(access?.proxy.hostKeys).toEqual([proxy.server.sshProxy!.hostPublicKey])
    const alias = writeRunSshHost("pinned", access!.proxy, access!.privateKey, home)
    const knownHosts = path.join(home, ".dstack", "ssh", "known_hosts")
    const port = proxy.server.sshProxy!.port
    expect(fs.readFileSync(knownHosts, "utf8")).toBe(`[proxy.example]:${port} ${proxy.server.sshProxy!.hostPublicKey}\n`)
    const config = fs.readFileSync(alias.configPath, "utf8")
    expect(config).toContain(`    UserKnownHostsFile ${knownHosts}\n    StrictHostKeyChecking yes\n`)
    expect(config).not.toContain("/dev/null")
    // The alias names proxy.example (as runs answers advertise it), which is this machine here:
    // HostKeyAlias keeps the known_hosts entry for that name.
    fs.writeFileSync(alias.configPath, config.replace("HostName proxy.example", `HostName 127.0.0.1\n    HostKeyAlias [proxy.example]:${port}`))
    const viaAlias = (args: ReadonlyArray<string>) =>
      new Promise<{ code: number | null; stderr: string; stdout: string }>((resolve) => {
        const child = spawn("ssh", ["-F", alias.configPath, "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", ...args])
        let stdout = ""
        let stderr = ""
        child.stdout.on("data", (d) => (stdout += d))
        child.stderr.on("data", (d) => (stderr += d))
        child.on("exit", (code) => resolve({ code, stdout, stderr }))
      })
    const ok = await viaAlias(["pinned", "echo via-alias"])
    expect(ok).toMatchObject({ code: 0, stdout: "via-alias\n", stderr: "" })

    // Another server answering at the proxy's address with another key.
    await proxy.server.sshProxy!.close()
    const impostor = await startSshProxy(proxy.server.runtime as never, { port, hostKeyFile: path.join(proxy.dir, "impostor_host_key") })
    try {
      expect(impostor.hostPublicKey).not.toBe(proxy.server.sshProxy!.hostPublicKey)
      const refused = await viaAlias(["pinned", "echo reached"])
      expect(refused.code).toBe(255)
      expect(refused.stdout).toBe("")
      expect(refused.stderr).toContain("REMOTE HOST IDENTIFICATION HAS CHANGED")
      expect(refused.stderr).toContain("Host key verification failed.")
    } finally {
      await impostor.close()
      await proxy.client.runs.stop(["pinned"], { abort: true })
    }
  }, 90_000)
})
