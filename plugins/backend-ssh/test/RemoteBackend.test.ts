// The remote backend against real sshd hosts (network namespaces sharing this machine's
// filesystem and its node): provisioning ships the runner bundle and starts it supervised,
// detects the machine, is idempotent, re-ships a changed bundle, restarts a runner that died;
// deprovisioning leaves no process and no file; hosts that cannot be used say why.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { type Backend, RunnerLaunch } from "@dstack-ts/core"
import { Effect, Exit, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { createNetnsHosts, describeWithNetns, type NetnsHost, type NetnsHosts } from "../../../test/support/netns.ts"
import plugin, { RemoteBackend } from "../src/index.ts"
import { parseAmdSmi, parseProbe } from "../src/internal/HostFacts.ts"

const RUNNER_ENTRY = fileURLToPath(new URL("../../../cli/src/runner.ts", import.meta.url))

let hosts: NetnsHosts
let scope: Scope.CloseableScope
let bundleFile: string
let bundleDir: string | undefined

const remoteHost = (host: NetnsHost, extra: Partial<Backend.RemoteHost> = {}): Backend.RemoteHost => ({
  hostname: host.ip,
  port: host.port,
  user: host.user,
  privateKey: hosts.privateKey,
  ...extra
})

const config = (instanceId: string): Backend.InstanceConfiguration => ({
  projectName: "main",
  instanceName: `fleet-${instanceId}`,
  instanceId,
  sshKeys: []
})

const run = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>) => Effect.runPromise(Scope.extend(effect, scope))
const flip = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>) => run(Effect.flip(effect))

/** The runner processes (node …/runner.mjs) running in the host's namespace, by pid. */
const runnerPids = async (host: NetnsHost, dir: string) => {
  const pids = await hosts.pids(host)
  return pids.filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(`${dir}/runner.mjs`)
    } catch {
      return false
    }
  })
}

/** Any process (supervisor, runner) whose command line names the instance directory. */
const processesOf = async (host: NetnsHost, dir: string) => {
  const pids = await hosts.pids(host)
  return pids.filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir)
    } catch {
      return false
    }
  })
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describeWithNetns(() => {
  beforeAll(async () => {
    scope = Effect.runSync(Scope.make())
    hosts = await createNetnsHosts({ count: 2, jump: true })
    // One bundle for all the backends of this file (shipped as it is: a .mjs entry).
    bundleDir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-remote-test-"))
    bundleFile = (await RunnerLaunch.bundleRunner(RUNNER_ENTRY, bundleDir)).file
  }, 300_000)
  afterAll(async () => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await hosts?.down()
    if (bundleDir) fs.rmSync(bundleDir, { recursive: true, force: true })
  })

  it("provisions a host: detects it, ships the bundle, starts the runner supervised; deprovisioning leaves nothing", async () => {
    const backend = await run(RemoteBackend.make({ runnerEntry: bundleFile }))
    expect(await run(backend.getOffers({} as never))).toEqual({ offers: [], excluded: [] })
    const host = hosts.hosts[0]!
    const provisioned = await run(backend.remoteHosts.provision(remoteHost(host), config("i-one")))
    const resources = provisioned.instanceType.resources
    expect(resources.cpus).toBe(os.cpus().length)
    expect(Math.abs(resources.memoryMib - Math.floor(os.totalmem() / 1024 / 1024))).toBeLessThan(2)
    expect(resources.disk.sizeMib).toBeGreaterThan(0)
    expect(resources.cpuArch).toBe(os.arch() === "arm64" ? "arm" : "x86")
    expect(provisioned.runnerPort).toBe(10999)
    expect(provisioned.internalIp).toBe(host.ip)
    const data = JSON.parse(provisioned.backendData!) as RemoteBackend.RemoteHostData
    expect(data.service).toBe("supervisor")
    expect(data.dir).toBe(`${os.homedir()}/.dstack-ts/remote/i-one`)
    expect(data.docker).toBe(fs.existsSync("/var/run/docker.sock"))
    expect(fs.readFileSync(`${data.dir}/runner.mjs`)).toEqual(fs.readFileSync(bundleFile))
    const [runner] = await runnerPids(host, data.dir)
    expect(runner).toBeGreaterThan(0)

    // Again with the same bundle: nothing is shipped or restarted.
    await run(backend.remoteHosts.provision(remoteHost(host), config("i-one")))
    expect(await runnerPids(host, data.dir)).toEqual([runner])

    // The supervisor restarts a runner that died.
    process.kill(runner!, "SIGKILL")
    let restarted: ReadonlyArray<number> = []
    for (let i = 0; i < 100 && restarted.length === 0; i++) {
      await sleep(200)
      restarted = (await runnerPids(host, data.dir)).filter((pid) => pid !== runner)
    }
    expect(restarted.length).toBe(1)

    await run(backend.remoteHosts.deprovision(remoteHost(host), config("i-one")))
    expect(await processesOf(host, data.dir)).toEqual([])
    expect(fs.existsSync(data.dir)).toBe(false)
    // Idempotent.
    await run(backend.remoteHosts.deprovision(remoteHost(host), config("i-one")))
  }, 300_000)

  it("re-ships and restarts the runner when the bundle changes", async () => {
    const host = hosts.hosts[1]!
    const first = await run(RemoteBackend.make({ runnerEntry: bundleFile }))
    const data = JSON.parse((await run(first.remoteHosts.provision(remoteHost(host), config("i-two")))).backendData!) as RemoteBackend.RemoteHostData
    const before = await runnerPids(host, data.dir)
    const changed = path.join(path.dirname(bundleFile), "runner-changed.mjs")
    fs.writeFileSync(changed, `${fs.readFileSync(bundleFile, "utf8")}\n// another build\n`)
    const second = await run(RemoteBackend.make({ runnerEntry: changed }))
    const after = JSON.parse((await run(second.remoteHosts.provision(remoteHost(host), config("i-two")))).backendData!) as RemoteBackend.RemoteHostData
    expect(after.bundleSha256).not.toBe(data.bundleSha256)
    expect(fs.readFileSync(`${data.dir}/runner.mjs`, "utf8")).toContain("// another build")
    const now = await runnerPids(host, data.dir)
    expect(now.length).toBe(1)
    expect(now).not.toEqual(before)
    await run(second.remoteHosts.deprovision(remoteHost(host), config("i-two")))
    expect(await processesOf(host, data.dir)).toEqual([])
  }, 300_000)

  it("provisions a host behind a jump host", async () => {
    const backend = await run(RemoteBackend.make({ runnerEntry: bundleFile }))
    const jump = hosts.hosts[0]!
    const hidden = remoteHost(hosts.hidden!, { proxyJump: { hostname: jump.ip, port: jump.port, user: jump.user, privateKey: hosts.privateKey } })
    const provisioned = await run(backend.remoteHosts.provision(hidden, config("i-hidden")))
    expect(provisioned.internalIp).toBe(hosts.hidden!.ip)
    const data = JSON.parse(provisioned.backendData!) as RemoteBackend.RemoteHostData
    expect((await runnerPids(hosts.hidden!, data.dir)).length).toBe(1)
    await run(backend.remoteHosts.deprovision(hidden, config("i-hidden")))
    expect(await processesOf(hosts.hidden!, data.dir)).toEqual([])
  }, 300_000)

  describe("a host that cannot be used says why", () => {
    it("login refused", async () => {
      const backend = await run(RemoteBackend.make({ runnerEntry: bundleFile }))
      const host = hosts.hosts[0]!
      const error = await flip(backend.remoteHosts.provision(remoteHost(host, { privateKey: hosts.otherKey }), config("i-x")))
      expect(error.reason).toBe("PermissionDenied")
      expect(error.message).toBe(`cannot log in to root@${host.ip}:22: host root@${host.ip}:22: the login was refused (the key is not authorized for this user)`)
    })

    it("sshd not answering", async () => {
      const backend = await run(RemoteBackend.make({ runnerEntry: bundleFile }))
      const host = hosts.hosts[0]!
      const error = await flip(backend.remoteHosts.provision(remoteHost(host, { port: 2222 }), config("i-x")))
      expect([error.reason, error.isRetryable]).toEqual(["Transport", true])
      expect(error.message).toContain("connection refused")
    })

    it("disk full", async () => {
      const backend = await run(RemoteBackend.make({ runnerEntry: bundleFile, minFreeDiskMib: 1e12 }))
      const host = hosts.hosts[0]!
      const error = await flip(backend.remoteHosts.provision(remoteHost(host), config("i-x")))
      expect(error.reason).toBe("NoCapacity")
      expect(error.message).toMatch(new RegExp(`^disk full on root@${host.ip.replace(/\./g, "\\.")}:22: \\d+ MiB free under ${os.homedir()}, the runner needs at least 1000000000000 MiB$`))
      expect(fs.existsSync(`${os.homedir()}/.dstack-ts/remote/i-x`)).toBe(false)
    })

    it("a runner that never answers: the end of its log", async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-remote-broken-"))
      const broken = path.join(dir, "broken.mjs")
      fs.writeFileSync(broken, `console.error("this runner cannot start: no config"); process.exit(3)\n`)
      const backend = await run(RemoteBackend.make({ runnerEntry: broken, startTimeoutSeconds: 3 }))
      const host = hosts.hosts[1]!
      const error = await flip(backend.remoteHosts.provision(remoteHost(host), config("i-broken")))
      expect(error.reason).toBe("Timeout")
      expect(error.message).toContain(`the runner on root@${host.ip}:22 did not answer on 127.0.0.1:10999 within 3s (supervisor)`)
      expect(error.message).toContain("this runner cannot start: no config")
      await run(backend.remoteHosts.deprovision(remoteHost(host), config("i-broken")))
      expect(await processesOf(host, `${os.homedir()}/.dstack-ts/remote/i-broken`)).toEqual([])
    }, 120_000)
  })
})

describe("host facts", () => {
  it("reads the probe: machine, node, systemd, sudo, Docker and NVIDIA and AMD GPUs", () => {
    const facts = parseProbe([
      "arch=aarch64",
      "cpus=64",
      "mem_kib=263859880",
      "disk_total_kib=1048576000",
      "disk_free_kib=524288000",
      "home=/home/ubuntu",
      "uid=1000",
      "ip=10.0.0.5",
      "node=/usr/bin/node",
      "node_version=v20.11.1",
      "systemd=1",
      "docker_error=EACCES",
      "nvidia=NVIDIA H100 80GB HBM3, 81559",
      "nvidia=NVIDIA H100 80GB HBM3, 81559",
      `amd=${JSON.stringify([{ gpu: 0, asic: { market_name: "AMD Instinct MI300X" }, vram: { size: { value: 192, unit: "GB" } } }])}`
    ].join("\n"))
    expect(facts).toMatchObject({
      cpuArch: "arm",
      cpus: 64,
      memoryMib: 257675,
      diskMib: 1024000,
      diskFreeMib: 512000,
      root: false,
      sudo: false,
      systemd: true,
      docker: false,
      dockerProblem: "EACCES",
      gpus: [
        { name: "H100", memoryMib: 81559, vendor: "nvidia" },
        { name: "H100", memoryMib: 81559, vendor: "nvidia" },
        { name: "MI300X", memoryMib: 196608, vendor: "amd" }
      ]
    })
    expect(parseAmdSmi("not json")).toEqual([])
  })
})

describe("the backend-ssh plugin", () => {
  it("contributes the backend `remote` and refuses unknown keys and bad values, naming them", async () => {
    const make = plugin.backends!.remote!
    const scope = Effect.runSync(Scope.make())
    const backend = await Effect.runPromise(Scope.extend(make({ service: "supervisor", runner_port: 11000 }), scope))
    expect(backend.type).toBe("remote")
    const refused = await Effect.runPromise(Scope.extend(Effect.flip(backend.createInstance({ backend: "remote" } as never, config("i"))), scope))
    expect(refused.message).toContain("provisioned from the fleet's ssh_config")
    const error = await Effect.runPromise(Scope.extend(Effect.flip(make({ services: "x", runner_port: 0 })), scope))
    expect(error.reason).toBe("Invalid")
    expect(error.message).toContain("services")
    expect(error.message).toContain("runner_port")
    await Effect.runPromise(Scope.close(scope, Exit.void))
  })
})
