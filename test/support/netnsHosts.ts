// Real SSH hosts for tests and benchmarks: network namespaces on a bridge, each with its own
// IP and its own sshd, made and removed by scripts/netns-hosts.sh. No vitest here (bench/
// imports it); tests use ./netns.ts, which adds `describeWithNetns`.
import { execFile, spawn, type ChildProcess } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

const run = promisify(execFile)

/** scripts/netns-hosts.sh in this checkout. */
export const NETNS_SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../scripts/netns-hosts.sh")

/** One host: a namespace with an sshd on `ip:port`, where `user` logs in with the set's key. */
export interface NetnsHost {
  /** `h0`, `h1`, …, or `hj` for the host behind `h0`. */
  readonly name: string
  readonly netns: string
  readonly ip: string
  readonly port: number
  readonly user: string
  /** The host to go through first (only `hj`: `h0`). */
  readonly jump?: string
}

/** A set of hosts made by `createNetnsHosts`; `down` removes all of it. */
export interface NetnsHosts {
  readonly name: string
  /** Where the set's keys, sshd configs and logs are. */
  readonly dir: string
  /** The root namespace's address on the hosts' bridge: the hosts reach this machine there. */
  readonly gateway: string
  /** The private key (OpenSSH text) authorized on every host. */
  readonly privateKey: string
  readonly privateKeyFile: string
  readonly publicKey: string
  /** A private key authorized on no host (for refused logins). */
  readonly otherKey: string
  /** The hosts on the bridge, reachable from this machine. */
  readonly hosts: ReadonlyArray<NetnsHost>
  /** The host reachable only through `hosts[0]` (when made with `jump: true`). */
  readonly hidden?: NetnsHost
  /** Kills the host's sshd, its open sessions included (processes they started keep running). */
  readonly stopSshd: (host: NetnsHost) => Promise<void>
  readonly startSshd: (host: NetnsHost) => Promise<void>
  /** The host's public host key (an OpenSSH public key line). */
  readonly hostKey: (host: NetnsHost) => string
  /** Gives the host a new host key (sshd restarted with it, open sessions cut); answers the new public key. */
  readonly rekey: (host: NetnsHost) => Promise<string>
  /** Takes the host off the network (its link down): peers get silence, not a refusal. */
  readonly cut: (host: NetnsHost) => Promise<void>
  readonly restore: (host: NetnsHost) => Promise<void>
  /** Runs a program inside the host's namespace (as root, on the shared filesystem). */
  readonly exec: (host: NetnsHost, file: string, args: ReadonlyArray<string>) => Promise<{ stdout: string; stderr: string }>
  /** Process ids running in the host's namespace. */
  readonly pids: (host: NetnsHost) => Promise<ReadonlyArray<number>>
  /**
   * Makes `127.0.0.1:port` inside the host's namespace reach `gateway:targetPort` on this
   * machine (a TCP relay process in the namespace, half-close kept), until `close`.
   */
  readonly relay: (host: NetnsHost, port: number, targetPort: number) => Promise<{ close: () => Promise<void> }>
  /** Removes the namespaces, the bridge, every process in them and the set's files. Idempotent. */
  readonly down: () => Promise<void>
}

/** Why netns hosts cannot be made here, or undefined when they can. */
export const netnsUnavailable = async (): Promise<string | undefined> => {
  if (process.platform !== "linux") return "network namespaces need Linux"
  if (process.getuid?.() !== 0) return "network namespaces need root"
  if (!fs.existsSync(NETNS_SCRIPT)) return `${NETNS_SCRIPT} is missing`
  for (const [tool, candidates] of [["ip", ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]], [
    "sshd",
    ["/usr/sbin/sshd", "/usr/bin/sshd"]
  ], ["ssh-keygen", ["/usr/bin/ssh-keygen", "/usr/local/bin/ssh-keygen"]]] as const) {
    if (!candidates.some((c) => fs.existsSync(c))) return `${tool} is not installed`
  }
  const probe = `dtsprobe${process.pid}`
  try {
    await run("ip", ["netns", "add", probe])
    await run("ip", ["netns", "del", probe])
  } catch (error) {
    return `cannot create a network namespace: ${error instanceof Error ? error.message : String(error)}`
  }
  return undefined
}

const script = async (args: ReadonlyArray<string>): Promise<string> => {
  try {
    return (await run("bash", [NETNS_SCRIPT, ...args], { maxBuffer: 1 << 20 })).stdout
  } catch (error) {
    const e = error as { stderr?: string; message: string }
    throw new Error(`scripts/netns-hosts.sh ${args.join(" ")} failed: ${e.stderr?.trim() || e.message}`)
  }
}

/** The relay program run inside a namespace: `node -e RELAY listenPort targetHost targetPort`. */
const RELAY = `
const net = require("node:net")
const [port, host, target] = process.argv.slice(1).map((a, i) => i === 1 ? a : Number(a))
const server = net.createServer({ allowHalfOpen: true }, (client) => {
  const upstream = net.connect({ host, port: target, allowHalfOpen: true })
  client.pipe(upstream); upstream.pipe(client)
  client.on("error", () => upstream.destroy()); upstream.on("error", () => client.destroy())
  client.on("close", () => upstream.destroy()); upstream.on("close", () => client.destroy())
})
server.listen(port, "127.0.0.1", () => console.log("ready"))
`

export interface NetnsHostsOptions {
  /** How many hosts on the bridge (default 2). */
  readonly count?: number
  /** One more host, reachable only through the first. */
  readonly jump?: boolean
  /**
   * A directory put first on the PATH of every session on the hosts (their runners and jobs
   * included): programs the hosts "have installed", such as a stand-in for a tool this machine
   * lacks. An absolute path of letters, digits, `_`, `.`, `/`, `-`.
   */
  readonly path?: string
}

/**
 * Makes `count` hosts on a bridge (and with `jump`, one more behind the first). Call `down`
 * when done (afterAll); a set left behind by a killed test is removed by
 * `scripts/netns-hosts.sh down-all`.
 *
 * @example
 * const net = await createNetnsHosts({ count: 2, jump: true })
 * // ssh -i net.privateKeyFile root@net.hosts[0].ip
 * await net.down()
 */
export const createNetnsHosts = async (options: NetnsHostsOptions = {}): Promise<NetnsHosts> => {
  const name = `t${randomBytes(3).toString("hex").slice(0, 5)}`
  const out = await script(["up", name, String(options.count ?? 2), ...(options.jump ? ["--jump"] : []), ...(options.path ? ["--path", options.path] : [])])
  const info = JSON.parse(out.trim().split("\n").pop()!) as {
    dir: string
    gateway: string
    privateKeyFile: string
    publicKeyFile: string
    otherKeyFile: string
    hosts: Array<NetnsHost>
    hidden: NetnsHost | null
  }
  const relays = new Set<ChildProcess>()
  const exec = async (host: NetnsHost, file: string, args: ReadonlyArray<string>) => {
    const { stdout, stderr } = await run("ip", ["netns", "exec", host.netns, file, ...args], { maxBuffer: 16 << 20 })
    return { stdout, stderr }
  }
  return {
    name,
    dir: info.dir,
    gateway: info.gateway,
    privateKey: fs.readFileSync(info.privateKeyFile, "utf8"),
    privateKeyFile: info.privateKeyFile,
    publicKey: fs.readFileSync(info.publicKeyFile, "utf8"),
    otherKey: fs.readFileSync(info.otherKeyFile, "utf8"),
    hosts: info.hosts,
    ...(info.hidden ? { hidden: info.hidden } : {}),
    stopSshd: async (host) => void (await script(["stop-sshd", name, host.name])),
    startSshd: async (host) => void (await script(["start-sshd", name, host.name])),
    hostKey: (host) => fs.readFileSync(path.join(info.dir, host.name, "host_key.pub"), "utf8").trim(),
    rekey: async (host) => (await script(["rekey", name, host.name])).trim().split("\n").pop()!,
    cut: async (host) => void (await script(["cut", name, host.name])),
    restore: async (host) => void (await script(["restore", name, host.name])),
    exec,
    pids: async (host) => {
      const { stdout } = await run("ip", ["netns", "pids", host.netns])
      return stdout.split("\n").filter((l) => l.trim() !== "").map(Number)
    },
    relay: (host, port, targetPort) =>
      new Promise((resolve, reject) => {
        const child = spawn("ip", ["netns", "exec", host.netns, "node", "-e", RELAY, String(port), info.gateway, String(targetPort)], {
          stdio: ["ignore", "pipe", "pipe"]
        })
        relays.add(child)
        let stderr = ""
        child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()))
        child.stdout!.once("data", () =>
          resolve({
            close: () =>
              new Promise<void>((done) => {
                relays.delete(child)
                if (child.exitCode !== null || child.signalCode !== null) return done()
                child.once("exit", () => done())
                child.kill("SIGKILL")
              })
          }))
        child.once("exit", (code) => reject(new Error(`the relay in ${host.netns} exited (${code}): ${stderr.trim()}`)))
      }),
    down: async () => {
      for (const child of relays) child.kill("SIGKILL")
      relays.clear()
      await script(["down", name])
    }
  }
}
