// The netns hosts that SSH tests run on (test/support/netns.ts, scripts/netns-hosts.sh): real
// sshd per host reached with the set's key, a host only reachable through another, the set's
// fleet file, sshd stopped and started mid-test, and nothing left behind by `down`.
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { promisify } from "node:util"
import { Effect } from "effect"
import { afterAll, beforeAll, expect, it } from "vitest"
import { loadConfiguration } from "../../core/src/config/index.ts"
import { createNetnsHosts, describeWithNetns, type NetnsHost, type NetnsHosts } from "../support/netns.ts"

/** Whether a process runs: a killed one that nobody reaped yet (a zombie: PID 1 here may not reap) does not. */
const running = (pid: number): boolean => {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0] !== "Z"
  } catch {
    return false
  }
}

const run = promisify(execFile)

describeWithNetns(() => {
  let net: NetnsHosts
  beforeAll(async () => {
    net = await createNetnsHosts({ count: 2, jump: true })
  })
  afterAll(async () => {
    await net?.down()
  })

  const sshOptions = (key: string) => [
    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-i", key
  ]
  const ssh = (host: NetnsHost, command: string, key = net.privateKeyFile, extra: Array<string> = []) =>
    run("ssh", [...sshOptions(key), ...extra, "-p", String(host.port), `${host.user}@${host.ip}`, command])

  it("each host runs its own sshd on its own IP, with node and the Docker socket of this machine", async () => {
    for (const host of net.hosts) {
      const { stdout } = await ssh(host, "hostname -I; command -v node; test -S /var/run/docker.sock && echo docker-socket")
      expect(stdout).toContain(host.ip)
      expect(stdout).toContain("node")
      expect(stdout).toContain("docker-socket")
    }
    // The hosts reach each other across the bridge.
    const { stdout } = await ssh(net.hosts[0]!, `timeout 3 bash -c '</dev/tcp/${net.hosts[1]!.ip}/22' && echo reached`)
    expect(stdout).toContain("reached")
  })

  it("a key the hosts do not know is refused", async () => {
    const keyFile = `${net.dir}/other-test-key`
    fs.writeFileSync(keyFile, net.otherKey, { mode: 0o600 })
    await expect(ssh(net.hosts[0]!, "true", keyFile)).rejects.toThrow(/Permission denied/)
  })

  it("the hidden host is reachable only through the jump host", async () => {
    const hidden = net.hidden!
    await expect(ssh(hidden, "true")).rejects.toThrow()
    const jump = net.hosts[0]!
    const proxy = `ssh ${sshOptions(net.privateKeyFile).join(" ")} -W %h:%p -p ${jump.port} ${jump.user}@${jump.ip}`
    const { stdout } = await ssh(hidden, "hostname -I", net.privateKeyFile, ["-o", `ProxyCommand=${proxy}`])
    expect(stdout).toContain(hidden.ip)
  })

  it("writes the set as a fleet file that dstack reads: a cluster fleet of the hosts, the hidden one behind h0", async () => {
    const file = path.join(net.dir, "fleet.dstack.yml")
    const fleet: any = await Effect.runPromise(loadConfiguration(file, { supportedOnly: true }))
    const [h0, h1] = net.hosts
    expect(fleet).toMatchObject({ type: "fleet", name: net.name, placement: "cluster" })
    expect(path.resolve(net.dir, fleet.sshConfig.identityFile)).toBe(net.privateKeyFile)
    expect(fleet.sshConfig.hosts.map((h: any) => [h.hostname, h.proxyJump?.hostname])).toEqual([[h0!.ip, undefined], [h1!.ip, undefined], [net.hidden!.ip, h0!.ip]])
  })

  it("stopping a host's sshd refuses new logins and kills open sessions; starting it again serves them", async () => {
    const host = net.hosts[1]!
    const session = ssh(host, "sleep 30").then(() => "finished", (error: Error) => error.message)
    await new Promise((r) => setTimeout(r, 500))
    await net.stopSshd(host)
    expect(await session).toContain("closed by remote host")
    await expect(ssh(host, "true")).rejects.toThrow()
    await net.startSshd(host)
    expect((await ssh(host, "echo back")).stdout.trim()).toBe("back")
  })

  it("down removes the namespaces, the bridge, the processes and the files, and is idempotent", async () => {
    const other = await createNetnsHosts({ count: 1 })
    const sshdPids = await other.pids(other.hosts[0]!)
    expect(sshdPids.length).toBeGreaterThan(0)
    await other.down()
    await other.down()
    const { stdout: namespaces } = await run("ip", ["netns", "list"])
    expect(namespaces).not.toContain(`dts${other.name}-`)
    const { stdout: links } = await run("ip", ["link", "show"])
    expect(links).not.toContain(`dts${other.name}`)
    for (const pid of sshdPids) expect(running(pid), `sshd ${pid}`).toBe(false)
    expect(fs.existsSync(other.dir)).toBe(false)
  })
})
