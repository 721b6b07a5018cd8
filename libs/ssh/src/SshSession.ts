/**
 * One logged-in SSH connection (node-ssh over ssh2), opened directly or through a jump host
 * (`proxy_jump`: a `direct-tcpip` channel from the jump host to the target's sshd carries the
 * second connection). Failures say which hop failed and why: login refused, unreachable, no
 * answer in time, or a host key other than the one recorded.
 *
 * Host keys: a hop with a recorded `hostKey` must present that key; a hop without one presents
 * any key and the session reports the key seen (`Session.hostKey`, `jumpHostKey`), for the
 * caller to record (trust on first use, as OpenSSH's `StrictHostKeyChecking=accept-new`).
 */
import type { NodeSSH } from "node-ssh"
import type { Client } from "ssh2"
import { fingerprint, hostKeyAlgorithms, publicKeyLine, sameKey } from "./HostKey.ts"

/** How to log in to one host. */
export interface HostAccess {
  readonly hostname: string
  readonly port: number
  readonly user: string
  readonly privateKey: string
  /**
   * The host's public key as recorded (an OpenSSH public key line, `ssh-ed25519 AAAA…`): a
   * server presenting another key is refused (`HopFailure` of kind `hostkey`). Absent: any key
   * is accepted, and the one presented is reported in the session.
   */
  readonly hostKey?: string
  readonly proxyJump?: Omit<HostAccess, "proxyJump">
}

export interface SessionOptions {
  /** Time for TCP connect plus handshake plus login, per hop. */
  readonly readyTimeoutMs: number
  /** SSH keep-alive: a probe every this many ms (0: none) … */
  readonly keepaliveIntervalMs: number
  /** … and the connection counts as dead after this many unanswered probes. */
  readonly keepaliveCountMax: number
}

/**
 * Why a hop failed: `auth` (key or user refused), `unreachable`, `timeout`, `key` (unusable
 * private key), `hostkey` (the host presented a key other than the recorded one), `other`.
 */
export type HopFailureKind = "auth" | "unreachable" | "timeout" | "key" | "hostkey" | "other"

/** A failure to open a session, naming the hop (`host root@10.0.0.2:22` or `jump host …`). */
export class HopFailure extends Error {
  constructor(readonly kind: HopFailureKind, readonly hop: string, message: string, override readonly cause?: unknown) {
    super(message)
  }
}

/** An open session; `closed` resolves once the connection (or the jump connection under it) is gone. */
export interface Session {
  readonly ssh: NodeSSH
  readonly client: Client
  /** The public key the host presented (an OpenSSH public key line). */
  readonly hostKey: string
  /** The public key the jump host presented, when there is one. */
  readonly jumpHostKey?: string
  readonly closed: Promise<void>
  readonly isClosed: () => boolean
  readonly close: () => void
}

export const describeHop = (access: Pick<HostAccess, "user" | "hostname" | "port">): string =>
  `${access.user}@${access.hostname.includes(":") ? `[${access.hostname}]` : access.hostname}:${access.port}`

const classify = (error: unknown): { kind: HopFailureKind; why: string } => {
  const e = error as { level?: string; code?: string; message?: string } | undefined
  const message = e?.message ?? String(error)
  if (e?.level === "client-authentication" || /authentication methods failed/i.test(message)) {
    return { kind: "auth", why: "the login was refused (the key is not authorized for this user)" }
  }
  if (e?.level === "client-timeout" || /timed out/i.test(message) || e?.code === "ETIMEDOUT") {
    return { kind: "timeout", why: "no SSH answer in time" }
  }
  switch (e?.code) {
    case "ECONNREFUSED":
      return { kind: "unreachable", why: "connection refused (is sshd running on that port?)" }
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return { kind: "unreachable", why: "no route to the host" }
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return { kind: "unreachable", why: "the host name does not resolve" }
    case "ECONNRESET":
      return { kind: "unreachable", why: "the connection was reset" }
  }
  if (/cannot parse privateKey|unsupported key|privateKey/i.test(message)) return { kind: "key", why: `the private key cannot be used: ${message}` }
  return { kind: "other", why: message }
}

/**
 * node-ssh (and ssh2 under it), loaded with the first connection: a server whose projects have
 * no SSH fleet, Slurm cluster or SSH transport never needs them.
 */
let nodeSshModule: Promise<typeof import("node-ssh")> | undefined
const nodeSsh = (): Promise<typeof import("node-ssh")> => {
  nodeSshModule ??= import("node-ssh").catch((e) => {
    nodeSshModule = undefined
    throw e
  })
  return nodeSshModule
}

const connectHop = async (
  access: Omit<HostAccess, "proxyJump">,
  options: SessionOptions,
  hopName: string,
  sock?: NodeJS.ReadableStream
): Promise<{ ssh: NodeSSH; hostKey: string }> => {
  const ssh = new (await nodeSsh()).NodeSSH()
  let presented: string | undefined
  let changed = false
  try {
    await ssh.connect({
      ...(sock ? { sock: sock as never } : { host: access.hostname }),
      port: access.port,
      username: access.user,
      privateKey: access.privateKey,
      readyTimeout: options.readyTimeoutMs,
      keepaliveInterval: options.keepaliveIntervalMs,
      keepaliveCountMax: options.keepaliveCountMax,
      ...(access.hostKey === undefined ? {} : { algorithms: { serverHostKey: [...hostKeyAlgorithms(access.hostKey)] as never } }),
      // Called at the first key exchange and at every re-key, which must present the same key.
      hostVerifier: (key: Buffer) => {
        const line = publicKeyLine(key)
        if (presented !== undefined) return sameKey(line, presented)
        presented = line
        changed = access.hostKey !== undefined && !sameKey(line, access.hostKey)
        return !changed
      }
    })
    if (presented === undefined) throw new Error("the host presented no host key")
    return { ssh, hostKey: presented }
  } catch (error) {
    ssh.dispose()
    if (changed) {
      throw new HopFailure(
        "hostkey",
        hopName,
        `${hopName}: the host key has changed: recorded ${fingerprint(access.hostKey!)}, presented ${fingerprint(presented!)} (another machine may be answering at this address)`,
        error
      )
    }
    const { kind, why } = classify(error)
    throw new HopFailure(kind, hopName, `${hopName}: ${why}`, error)
  }
}

/**
 * Logs in to `access`, through its jump host when it has one.
 *
 * @example
 * const session = await openSession({ hostname: "10.0.0.2", port: 22, user: "root", privateKey }, options)
 * const channel = await session.ssh.forwardOut("127.0.0.1", 0, "127.0.0.1", 10999)
 */
export const openSession = async (access: HostAccess, options: SessionOptions): Promise<Session> => {
  const target = `host ${describeHop(access)}`
  let jump: NodeSSH | undefined
  let jumpHostKey: string | undefined
  let ssh: NodeSSH
  let hostKey: string
  if (access.proxyJump) {
    const jumpName = `jump host ${describeHop(access.proxyJump)}`
    const jumpHop = await connectHop(access.proxyJump, options, jumpName)
    jump = jumpHop.ssh
    jumpHostKey = jumpHop.hostKey
    let channel: NodeJS.ReadableStream
    try {
      channel = await jump.forwardOut("127.0.0.1", 0, access.hostname, access.port)
    } catch (error) {
      jump.dispose()
      throw new HopFailure(
        "unreachable",
        target,
        `${target}: the ${jumpName} cannot reach it (${(error as Error)?.message ?? String(error)})`,
        error
      )
    }
    try {
      const hop = await connectHop(access, options, `${target} (through the ${jumpName})`, channel)
      ssh = hop.ssh
      hostKey = hop.hostKey
    } catch (error) {
      jump.dispose()
      throw error
    }
  } else {
    const hop = await connectHop(access, options, target)
    ssh = hop.ssh
    hostKey = hop.hostKey
  }
  const client = ssh.connection!
  let closed = false
  const closedPromise = new Promise<void>((resolve) => {
    const done = () => {
      if (closed) return
      closed = true
      ssh.dispose()
      jump?.dispose()
      resolve()
    }
    client.once("close", done)
    client.once("end", done)
    jump?.connection?.once("close", done)
  })
  // After login, errors surface as `close`; an unhandled `error` event would crash the process.
  client.on("error", () => {})
  jump?.connection?.on("error", () => {})
  return {
    ssh,
    client,
    hostKey,
    ...(jumpHostKey === undefined ? {} : { jumpHostKey }),
    closed: closedPromise,
    // node-ssh forgets a connection it has disposed before ssh2 reports it closed.
    isClosed: () => closed || ssh.connection === null,
    close: () => {
      closed = true
      ssh.dispose()
      jump?.dispose()
    }
  }
}
