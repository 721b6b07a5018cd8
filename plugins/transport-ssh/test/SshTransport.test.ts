// The SSH transport against real sshd hosts (network namespaces) and a real runner on them:
// one shared connection per host, a host behind a jump host, reconnection after the host's
// sshd went away and came back, and errors that name the hop that failed.
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { RunnerLaunch, RunnerTransport } from "@dstack-ts/core"
import { Effect, Exit, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { createNetnsHosts, describeWithNetns, type NetnsHost, type NetnsHosts } from "../../../test/support/netns.ts"
import plugin, { SshTransport } from "../src/index.ts"

const RUNNER_ENTRY = fileURLToPath(new URL("../../../cli/src/runner.ts", import.meta.url))
const RUNNER_PORT = 10999

let hosts: NetnsHosts
let bundle: string
const runners: Array<ChildProcess> = []

/** Starts the CLI's runner build inside the host's namespace on its 127.0.0.1:10999. */
const startRunner = (host: NetnsHost) =>
  new Promise<void>((resolve, reject) => {
    const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-ssh-runner-"))
    const child = spawn("ip", ["netns", "exec", host.netns, "node", bundle, "--host", "127.0.0.1", "--port", String(RUNNER_PORT), "--work-dir", workDir], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    runners.push(child)
    let stderr = ""
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()))
    child.stdout!.once("data", () => resolve())
    child.once("exit", (code) => reject(new Error(`the runner on ${host.name} exited (${code}): ${stderr}`)))
  })

const access = (host: NetnsHost, privateKey = hosts.privateKey): RunnerTransport.SshAccess => ({
  user: host.user,
  port: host.port,
  privateKey
})

const target = (host: NetnsHost, ssh: RunnerTransport.SshAccess = access(host)): RunnerTransport.RunnerTarget => ({
  hostname: host.ip,
  runnerPort: RUNNER_PORT,
  ssh
})

const hiddenTarget = (jumpKey = hosts.privateKey): RunnerTransport.RunnerTarget => {
  const jump = hosts.hosts[0]!
  return target(hosts.hidden!, { ...access(hosts.hidden!), proxyJump: { hostname: jump.ip, ...access(jump, jumpKey) } })
}

const health = (client: RunnerTransport.RunnerClient) =>
  Effect.flatMap(client.fetch("/api/healthcheck"), (response) => Effect.promise(() => response.json() as Promise<{ service: string }>))

/** How many SSH connections the host's sshd has open from outside (on its port 22). */
const sshConnections = async (host: NetnsHost) => {
  const { stdout } = await hosts.exec(host, "ss", ["-Htn", "state", "established", "( sport = :22 )"])
  return stdout.split("\n").filter((l) => l.trim() !== "").length
}

const run = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>) => Effect.runPromise(Effect.scoped(effect))

describeWithNetns(() => {
  beforeAll(async () => {
    hosts = await createNetnsHosts({ count: 2, jump: true })
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-ssh-bundle-"))
    bundle = (await RunnerLaunch.bundleRunner(RUNNER_ENTRY, dir)).file
    await Promise.all([startRunner(hosts.hosts[0]!), startRunner(hosts.hosts[1]!), startRunner(hosts.hidden!)])
  }, 120_000)
  afterAll(async () => {
    for (const child of runners) child.kill("SIGKILL")
    await hosts?.down()
  })

  describe("connect", () => {
    it("reaches the runner on each host through one SSH connection per host, however many clients", () =>
      run(Effect.gen(function*() {
        const ssh = yield* SshTransport.make()
        const [h0, h1] = [hosts.hosts[0]!, hosts.hosts[1]!]
        const clients = yield* Effect.all([ssh.connect(target(h0)), ssh.connect(target(h0)), ssh.connect(target(h1))])
        for (const client of clients) expect((yield* health(client)).service).toBe("dstack-ts-runner")
        expect(yield* Effect.promise(() => sshConnections(h0))).toBe(1)
        expect(yield* Effect.promise(() => sshConnections(h1))).toBe(1)
        // A forward to the host shares the connection too.
        const forward = yield* ssh.forward(target(h0), 0, RUNNER_PORT)
        const response = yield* Effect.promise(() => fetch(`http://127.0.0.1:${forward.localPort}/api/healthcheck`))
        expect(response.status).toBe(200)
        expect(yield* Effect.promise(() => sshConnections(h0))).toBe(1)
      })))

    it("reaches the runner of a host behind a jump host (proxy_jump)", () =>
      run(Effect.gen(function*() {
        const ssh = yield* SshTransport.make()
        const client = yield* ssh.connect(hiddenTarget())
        expect((yield* health(client)).service).toBe("dstack-ts-runner")
      })))

    it("reconnects when the host's sshd went away and came back, through the same client", () =>
      run(Effect.gen(function*() {
        const ssh = yield* SshTransport.make({ reconnectAttempts: 6, reconnectBackoffSeconds: 0.2 })
        const h1 = hosts.hosts[1]!
        const client = yield* ssh.connect(target(h1))
        expect((yield* health(client)).service).toBe("dstack-ts-runner")
        yield* Effect.promise(() => hosts.stopSshd(h1))
        // A request made while the old connection is still going down fails on it; the next ones
        // find it gone and are refused a new one. Each failure is Transport, naming the host.
        let down = yield* Effect.flip(health(client))
        for (let i = 0; i < 20 && !down.message.includes("connection refused"); i++) {
          expect([down.reason, down.message.includes(`root@${h1.ip}:22`)], down.message).toEqual(["Transport", true])
          yield* Effect.sleep("50 millis")
          down = yield* Effect.flip(health(client))
        }
        expect(down.reason).toBe("Transport")
        expect(down.message).toContain(`root@${h1.ip}:22`)
        expect(down.message).toContain("connection refused")
        yield* Effect.promise(() => hosts.startSshd(h1))
        expect((yield* health(client)).service).toBe("dstack-ts-runner")
        // Dropped by us: the next request opens a new connection as well.
        ssh.dropConnections()
        expect((yield* health(client)).service).toBe("dstack-ts-runner")
      })))
  })

  describe("keep-alive", () => {
    it("a host that went silent is detected by keep-alive: requests fail with Transport instead of hanging, and work again once it is back", () =>
      run(Effect.gen(function*() {
        const ssh = yield* SshTransport.make({ keepaliveIntervalSeconds: 1, keepaliveCountMax: 2, connectTimeoutSeconds: 3, reconnectAttempts: 1 })
        const h1 = hosts.hosts[1]!
        const client = yield* ssh.connect(target(h1))
        expect((yield* health(client)).service).toBe("dstack-ts-runner")
        yield* Effect.promise(() => hosts.cut(h1))
        const error = yield* Effect.flip(health(client).pipe(
          Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error("the request hung on a silent host") })
        ))
        expect(error).toMatchObject({ _tag: "RunnerTransportError", reason: "Transport" })
        yield* Effect.promise(() => hosts.restore(h1))
        expect((yield* health(client)).service).toBe("dstack-ts-runner")
      })), 90_000)
  })

  describe("errors name the hop and the cause", () => {
    it("a key the host does not accept is PermissionDenied, not retried", () =>
      run(Effect.gen(function*() {
        const ssh = yield* SshTransport.make()
        const h0 = hosts.hosts[0]!
        const error = yield* Effect.flip(ssh.connect(target(h0, access(h0, hosts.otherKey))))
        expect(error.reason).toBe("PermissionDenied")
        expect(error.message).toBe(`host root@${h0.ip}:22: the login was refused (the key is not authorized for this user)`)
        expect(error.isRetryable).toBe(false)
      })))

    it("a host whose sshd does not answer is a retryable Transport error naming it", () =>
      run(Effect.gen(function*() {
        const ssh = yield* SshTransport.make({ reconnectAttempts: 2, reconnectBackoffSeconds: 0.1 })
        const h0 = hosts.hosts[0]!
        const error = yield* Effect.flip(ssh.connect(target(h0, { ...access(h0), port: 2222 })))
        expect([error.reason, error.isRetryable]).toEqual(["Transport", true])
        expect(error.message).toBe(`host root@${h0.ip}:2222: connection refused (is sshd running on that port?)`)
      })))

    it("the jump host refusing the key, or being down, names the jump host", () =>
      run(Effect.gen(function*() {
        const ssh = yield* SshTransport.make({ reconnectAttempts: 1 })
        const jump = hosts.hosts[0]!
        const refused = yield* Effect.flip(ssh.connect(hiddenTarget(hosts.otherKey)))
        expect(refused.reason).toBe("PermissionDenied")
        expect(refused.message).toContain(`jump host root@${jump.ip}:22: the login was refused`)
        const t = hiddenTarget()
        const jumpDown = yield* Effect.flip(ssh.connect({ ...t, ssh: { ...t.ssh!, proxyJump: { ...t.ssh!.proxyJump!, port: 2222 } } }))
        expect(jumpDown.reason).toBe("Transport")
        expect(jumpDown.message).toBe(`jump host root@${jump.ip}:2222: connection refused (is sshd running on that port?)`)
      })))

    it("the host behind the jump host being down names that host and the jump host", () =>
      run(Effect.gen(function*() {
        const ssh = yield* SshTransport.make({ reconnectAttempts: 1 })
        const t = hiddenTarget()
        const error = yield* Effect.flip(ssh.connect({ ...t, ssh: { ...t.ssh!, port: 2222 } }))
        expect(error.reason).toBe("Transport")
        expect(error.message).toContain(`host root@${hosts.hidden!.ip}:2222: the jump host root@${hosts.hosts[0]!.ip}:22 cannot reach it`)
      })))

    it("a runner that does not listen fails the request with Transport, naming host and port", () =>
      run(Effect.gen(function*() {
        const ssh = yield* SshTransport.make()
        const h0 = hosts.hosts[0]!
        const client = yield* ssh.connect({ ...target(h0), runnerPort: 10998 })
        const error = yield* Effect.flip(client.fetch("/api/healthcheck"))
        expect(error.reason).toBe("Transport")
        expect(error.message).toContain(`cannot reach the runner at port 10998 of root@${h0.ip}:22 through SSH`)
      })))

    it("a target without SSH access is Invalid", () =>
      run(Effect.gen(function*() {
        const ssh = yield* SshTransport.make()
        const error = yield* Effect.flip(ssh.connect({ hostname: "10.0.0.1", runnerPort: 10999, instanceId: "i-1" }))
        expect(error.reason).toBe("Invalid")
        expect(error.message).toContain("i-1 has no SSH access")
      })))
  })
})

describe("the transport-ssh plugin", () => {
  it("makes the transport from its options and refuses unknown keys and bad values, naming them", async () => {
    const make = plugin.transports!.ssh!
    expect((await run(make({ keepalive_interval_seconds: 5 }))).name).toBe("ssh")
    expect((await run(make(undefined))).name).toBe("ssh")
    const exit = await Effect.runPromiseExit(Effect.scoped(make({ keepalive: 5, reconnect_attempts: 0 })))
    expect(Exit.isFailure(exit)).toBe(true)
    const error = await Effect.runPromise(Effect.flip(Effect.scoped(make({ keepalive: 5, reconnect_attempts: 0 }))))
    expect(error.reason).toBe("Invalid")
    expect(error.message).toContain("keepalive")
    expect(error.message).toContain("reconnect_attempts")
  })
})
