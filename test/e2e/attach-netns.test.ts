// `dstack attach` through the server on a real SSH fleet host (a network namespace with its own
// sshd, test/support/netns.ts): a task on the host serves HTTP on a port of the host's own
// loopback, the real CLI attaches, and a fetch on the user's localhost gets the job's bytes —
// carried client → server (WebSocket) → the ssh transport's forward → the job. The user's
// machine has no key to the host. Between the CLI and the server sits a plain TCP relay that
// the test cuts and restarts (a dropped server connection): the next request works again. Then
// the refusals (a port the job does not expose, a user outside the project, a finished run), the
// SSH proxy reaching the same job with OpenSSH, and the run ending makes `dstack attach` exit
// with a message saying so.
import { spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import type { Server } from "../../core/src/server/createServer.ts"
import { serve, type Serving } from "../../core/src/server/serve.ts"
import { appCall } from "../support/api.ts"
import { createNetnsHosts, describeWithNetns, type NetnsHosts } from "../support/netns.ts"
import { makeUntil } from "../support/until.ts"
import { sshFleetServer } from "../support/sshFleetServer.ts"

import { CLI } from "../support/cli.ts"
import { freeNamedPorts } from "../support/ports.ts"
const TOKEN = "attach-netns-token"
const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-attach-e2e-"))
let server: Server
let serving: Serving
let hosts: NetnsHosts
let relay: Relay
let outsiderToken = ""
const call = appCall(() => server, TOKEN)

/** A TCP relay to the server that the test can cut (every connection) and stop for a while. */
interface Relay {
  readonly port: number
  readonly cut: () => Promise<void>
  readonly start: () => Promise<void>
  readonly connections: () => number
}
const makeRelay = async (target: number): Promise<Relay> => {
  const sockets = new Set<net.Socket>()
  let opened = 0
  let listener: net.Server | undefined
  let port = 0
  const start = () =>
    new Promise<void>((resolve, reject) => {
      listener = net.createServer((client) => {
        opened++
        const upstream = net.connect(target, "127.0.0.1")
        sockets.add(client).add(upstream)
        client.pipe(upstream).pipe(client)
        const drop = () => {
          client.destroy()
          upstream.destroy()
          sockets.delete(client)
          sockets.delete(upstream)
        }
        client.on("error", drop).on("close", drop)
        upstream.on("error", drop).on("close", drop)
      })
      listener.once("error", reject)
      listener.listen(port, "127.0.0.1", () => {
        port = (listener!.address() as net.AddressInfo).port
        resolve()
      })
    })
  await start()
  return {
    get port() {
      return port
    },
    start,
    connections: () => opened,
    cut: async () => {
      for (const s of sockets) s.destroy()
      await new Promise((r) => listener!.close(r))
    }
  }
}

const until = makeUntil({ timeoutMs: 120_000, everyMs: 250 })
const getRun = async (name: string) => (await call("/api/project/main/runs/get", { run_name: name })).body
const attachRoute = (query: string, token: string) =>
  fetch(`${serving.url}/api/project/main/runs/attach?${query}`, { headers: { authorization: `Bearer ${token}` } }).then(async (r) => ({ status: r.status, text: await r.text() }))

/** A fetch through the attached port; a failure becomes its message. */
const fetchText = (port: number, file: string) =>
  fetch(`http://127.0.0.1:${port}/${file}`, { headers: { connection: "close" } }).then((r) => r.text()).catch((e: Error) => `error: ${e.message}`)

describeWithNetns(() => {
  let attach: ChildProcess | undefined
  let out = ""
  let exit: Promise<number | null>
  const JOB_PORT = 28123
  let local = 0

  beforeAll(async () => {
    hosts = await createNetnsHosts({ count: 1 })
    server = await sshFleetServer(TOKEN, {
      sshProxy: { port: 0, hostKeyFile: path.join(home, "sshproxy_host_key"), hostname: "127.0.0.1" }
    })
    serving = await serve(server, { port: 0, handleSignals: false })
    relay = await makeRelay(serving.port)
    const outsider = await call("/api/users/create", { username: "outsider", global_role: "user" })
    expect(outsider.status, JSON.stringify(outsider.body)).toBe(200)
    outsiderToken = outsider.body.creds.token
    const host = hosts.hosts[0]!
    const configuration = {
      type: "fleet",
      name: "attach-fleet",
      ssh_config: { user: "root", identity_file: hosts.privateKeyFile, ssh_key: { public: hosts.publicKey, private: hosts.privateKey }, hosts: [{ hostname: host.ip, port: host.port }] }
    }
    const applied = await call("/api/project/main/fleets/apply", { plan: { spec: { configuration } } })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    await until("fleet idle", async () => (await call("/api/project/main/fleets/get", { name: "attach-fleet" })).body, (f) => f.instances?.[0]?.status === "idle", 300_000)
  }, 400_000)

  afterAll(async () => {
    attach?.kill("SIGKILL")
    await serving?.close()
    await hosts?.down()
    fs.rmSync(home, { recursive: true, force: true })
  })

  it("serves the job's HTTP port on localhost, through the server, and again after the server connection drops", async () => {
    const dir = `/tmp/attach-netns-${process.pid}`
    const started = await call("/api/project/main/runs/apply", {
      plan: {
        run_spec: {
          run_name: "netns-web",
          repo_id: "e2e",
          repo_data: { repo_type: "virtual" },
          configuration: {
            type: "task",
            fleets: ["attach-fleet"],
            ports: [JOB_PORT],
            resources: { cpu: "1..", memory: "0.1GB..", disk: "0.1GB.." },
            commands: [`mkdir -p ${dir} && cd ${dir} && echo "served on $(hostname -I | tr -d ' \\n')" > index.html && exec python3 -m http.server ${JOB_PORT} --bind 127.0.0.1`]
          }
        }
      }
    })
    expect(started.status, JSON.stringify(started.body)).toBe(200)
    const run = await until("netns-web running", () => getRun("netns-web"), (r) => r.status === "running" || ["done", "failed", "terminated"].includes(r.status), 180_000)
    expect(run.status, JSON.stringify(run.jobs[0].job_submissions.at(-1))).toBe("running")
    expect(run.jobs[0].job_submissions.at(-1).job_provisioning_data.hostname).toBe(hosts.hosts[0]!.ip)

    // The job's port is free here (the job runs on another host): attach uses the same port.
    attach = spawn(process.execPath, [CLI, "attach", "netns-web"], {
      cwd: home,
      env: { ...process.env, HOME: home, NO_COLOR: "1", DSTACK_SERVER_URL: `http://127.0.0.1:${relay.port}`, DSTACK_TOKEN: TOKEN, DSTACK_PROJECT: "main" }
    })
    exit = new Promise((r) => attach!.once("exit", (code) => r(code)))
    attach.stdout!.on("data", (d) => (out += d))
    attach.stderr!.on("data", (d) => (out += d))
    await until("attached", async () => out, (o) => /→ http:\/\/127\.0\.0\.1:\d+/.test(o) || attach!.exitCode !== null, 60_000)
    local = Number(/→ http:\/\/127\.0\.0\.1:(\d+)/.exec(out)?.[1])
    expect(out).toContain(`${JOB_PORT} → http://127.0.0.1:${JOB_PORT}`)
    const expected = `served on ${hosts.hosts[0]!.ip}\n`
    const body = await until("the job answers through attach", () => fetchText(local, "index.html"), (t) => !t.startsWith("error"), 60_000)
    expect(body).toBe(expected)

    // The server connection drops (every tunnel cut, the server away a moment): the next
    // request opens a new tunnel once the server is back.
    const before = relay.connections()
    await relay.cut()
    const during = fetchText(local, "index.html")
    await new Promise((r) => setTimeout(r, 1_000))
    await relay.start()
    expect(await during).toBe(expected)
    expect(await fetchText(local, "index.html")).toBe(expected)
    expect(relay.connections()).toBeGreaterThan(before)
  }, 300_000)

  it("refuses a port the job does not expose, a user outside the project, and a run that does not exist", async () => {
    const port = await attachRoute("run_name=netns-web&port=9", TOKEN)
    expect(port.status, port.text).toBe(400)
    expect(port.text).toContain(`Port 9 is not a port of run netns-web's job (it exposes ${JOB_PORT}`)
    const outsider = await attachRoute(`run_name=netns-web&port=${JOB_PORT}`, outsiderToken)
    expect(outsider.status, outsider.text).toBe(403)
    const missing = await attachRoute(`run_name=no-such-run&port=${JOB_PORT}`, TOKEN)
    expect(missing.status, missing.text).toBe(400)
    expect(missing.text).toContain("Run no-such-run does not exist in project main")
    const noPort = await attachRoute("run_name=netns-web", TOKEN)
    expect(noPort.status, noPort.text).toBe(400)
    expect(noPort.text).toContain("Give port")
    // The checks pass: the answer names the tunnel (a WebSocket upgrade would open it).
    const ok = await attachRoute(`run_name=netns-web&port=${JOB_PORT}`, TOKEN)
    expect(ok.status, ok.text).toBe(200)
    expect(JSON.parse(ok.text)).toEqual({ run_name: "netns-web", job_num: 0, replica_num: 0, port: JOB_PORT, protocol: "dstack-tunnel" })
    // An outsider's WebSocket is refused before anything is opened.
    const { default: WebSocket } = await import("ws")
    const refused = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${serving.port}/api/project/main/runs/attach?run_name=netns-web&port=${JOB_PORT}`, ["dstack-tunnel"], { headers: { authorization: `Bearer ${outsiderToken}` } })
      ws.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0))
      ws.once("open", () => resolve(101))
      ws.once("error", () => resolve(-1))
    })
    expect(refused).toBe(403)
  }, 60_000)

  it("the SSH proxy (docs/ssh-proxy.md) forwards the host's job port and its runner to OpenSSH with the owner's key, and runs a command on the host", async () => {
    const me = await call("/api/users/get_my_user", {})
    const key = path.join(home, "owner_key")
    fs.writeFileSync(key, me.body.ssh_private_key, { mode: 0o600 })
    const upstreamId = (await getRun("netns-web")).jobs[0].job_connection_info.sshproxy_upstream_id
    expect(upstreamId).toMatch(/^[0-9a-f]{32}$/)
    const jobLocal = await freeNamedPorts(2)
    const tunnel = spawn("ssh", [
      "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
      "-o", "ExitOnForwardFailure=yes", "-i", key, "-p", String(server.sshProxy!.port), "-N",
      "-L", `127.0.0.1:${jobLocal}:localhost:${JOB_PORT}`, "-L", `127.0.0.1:${jobLocal + 1}:localhost:10999`, `${upstreamId}_root@127.0.0.1`
    ])
    try {
      const body = await until("the job answers through the proxy", () => fetchText(jobLocal, "index.html"), (t) => !t.startsWith("error"), 60_000)
      expect(body).toBe(`served on ${hosts.hosts[0]!.ip}\n`)
      expect(JSON.parse(await fetchText(jobLocal + 1, "api/healthcheck"))).toMatchObject({ service: "dstack-ts-runner" })
    } finally {
      tunnel.kill("SIGTERM")
    }
    // `ssh RUN cmd` runs on the fleet host (its network namespace has the host's address),
    // through the runner reached over the ssh transport.
    const shell = spawn("ssh", [
      "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
      "-o", "LogLevel=ERROR", "-i", key, "-p", String(server.sshProxy!.port), `${upstreamId}_root@127.0.0.1`, "hostname -I; exit 9"
    ])
    let shellOut = ""
    shell.stdout.on("data", (d) => (shellOut += d))
    shell.stderr.on("data", (d) => (shellOut += d))
    const shellCode = await new Promise<number | null>((resolve) => shell.on("exit", resolve))
    expect(shellOut.trim().split(/\s+/), shellOut).toContain(hosts.hosts[0]!.ip)
    expect(shellCode).toBe(9)
  }, 90_000)

  it("exits with a message when the run ends, and the finished run is refused", async () => {
    const stopped = await call("/api/project/main/runs/stop", { runs_names: ["netns-web"], abort: true })
    expect(stopped.status, JSON.stringify(stopped.body)).toBe(200)
    const code = await Promise.race([exit, new Promise<string>((r) => setTimeout(() => r("still running"), 60_000))])
    expect(code, out).toBe(0)
    expect(out).toMatch(/Run netns-web ended \(terminated[^)]*\): its ports are no longer forwarded/)
    const finished = await attachRoute(`run_name=netns-web&port=${JOB_PORT}`, TOKEN)
    expect(finished.status, finished.text).toBe(400)
    expect(finished.text).toContain("Run netns-web is terminated: there is nothing to attach to")
    await expect(fetch(`http://127.0.0.1:${local}/index.html`)).rejects.toThrow()
  }, 90_000)
})
