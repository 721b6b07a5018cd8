// Host keys on real sshd hosts (network namespaces, test/support/netns.ts): a session reports
// the key the host presented (trust on first use records it), a recorded key is required of
// the host and of its jump host, and a host with a new key is refused naming the hop and both
// fingerprints. Fingerprints are checked against `ssh-keygen -l`.
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { fingerprint, HopFailure, hostKeyAlgorithms, openSession, parsePublicKey, runScript, sameKey, SshPool } from "@dstack-ts/ssh"
import { createNetnsHosts, describeWithNetns, type NetnsHosts } from "../../../test/support/netns.ts"

const options = { readyTimeoutMs: 10_000, keepaliveIntervalMs: 0, keepaliveCountMax: 3 }

/** `ssh-keygen -l`'s fingerprint of a public key line. */
const keygenFingerprint = (line: string): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hostkey-"))
  try {
    fs.writeFileSync(path.join(dir, "k.pub"), `${line}\n`)
    return execFileSync("ssh-keygen", ["-l", "-E", "sha256", "-f", path.join(dir, "k.pub")], { encoding: "utf8" }).split(" ")[1]
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

/** A fresh key of `type` made by ssh-keygen, as a public key line. */
const newPublicKey = (type: "ed25519" | "rsa" | "ecdsa"): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hostkey-"))
  try {
    execFileSync("ssh-keygen", ["-q", "-t", type, "-N", "", "-f", path.join(dir, "k"), "-C", "a comment"])
    return fs.readFileSync(path.join(dir, "k.pub"), "utf8").trim()
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const failureOf = async (promise: Promise<unknown>): Promise<HopFailure> => {
  const error = await promise.then(() => undefined, (e) => e)
  expect(error).toBeInstanceOf(HopFailure)
  return error as HopFailure
}

describe("host key lines", () => {
  it("fingerprints as ssh-keygen -l does, for each key type", () => {
    for (const type of ["ed25519", "rsa", "ecdsa"] as const) {
      const line = newPublicKey(type)
      expect(fingerprint(line)).toBe(keygenFingerprint(line))
    }
  })

  it("reads a key from a public key line or a known_hosts line, comments and host names aside", () => {
    const line = newPublicKey("ed25519")
    const [type, base64] = line.split(" ")
    expect(parsePublicKey(line)?.type).toBe("ssh-ed25519")
    expect(sameKey(line, `10.0.0.2,[bastion]:2222 ${type} ${base64}`)).toBe(true)
    expect(sameKey(line, `${type} ${base64}`)).toBe(true)
    expect(sameKey(line, newPublicKey("ed25519"))).toBe(false)
    // A blob whose type is not the one written is no key.
    expect(parsePublicKey(`ssh-rsa ${base64}`)).toBeUndefined()
    expect(parsePublicKey("not a key")).toBeUndefined()
    expect(sameKey("not a key", "not a key")).toBe(false)
  })

  it("asks for the recorded key's algorithms first, and still offers the others", () => {
    expect(hostKeyAlgorithms(newPublicKey("rsa")).slice(0, 3)).toEqual(["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"])
    expect(hostKeyAlgorithms(newPublicKey("ecdsa"))[0]).toBe("ecdsa-sha2-nistp256")
    expect(hostKeyAlgorithms(newPublicKey("ed25519"))[0]).toBe("ssh-ed25519")
    for (const type of ["ed25519", "rsa", "ecdsa"] as const) expect(hostKeyAlgorithms(newPublicKey(type))).toHaveLength(7)
  })
})

let hosts: NetnsHosts

describeWithNetns(() => {
  beforeAll(async () => {
    hosts = await createNetnsHosts({ count: 2, jump: true })
  }, 120_000)
  afterAll(async () => {
    await hosts?.down()
  })

  it("reports the keys presented (the host's and its jump host's) and accepts them when recorded", async () => {
    const [h0] = hosts.hosts
    const hidden = hosts.hidden!
    const jump = { hostname: h0.ip, port: h0.port, user: h0.user, privateKey: hosts.privateKey }
    const first = await openSession({ hostname: hidden.ip, port: hidden.port, user: hidden.user, privateKey: hosts.privateKey, proxyJump: jump }, options)
    first.close()
    expect(sameKey(first.hostKey, hosts.hostKey(hidden))).toBe(true)
    expect(sameKey(first.jumpHostKey!, hosts.hostKey(h0))).toBe(true)

    const again = await openSession({
      hostname: hidden.ip,
      port: hidden.port,
      user: hidden.user,
      privateKey: hosts.privateKey,
      hostKey: first.hostKey,
      proxyJump: { ...jump, hostKey: first.jumpHostKey! }
    }, options)
    try {
      expect((await runScript(again, "echo ok", [])).stdout).toBe("ok\n")
    } finally {
      again.close()
    }
  })

  it("refuses a host whose key changed, naming it and both fingerprints; the pool does not retry", async () => {
    const h1 = hosts.hosts[1]
    const recorded = hosts.hostKey(h1)
    const access = { hostname: h1.ip, port: h1.port, user: h1.user, privateKey: hosts.privateKey, hostKey: recorded }
    ;(await openSession(access, options)).close()
    const presented = await hosts.rekey(h1)
    expect(sameKey(presented, recorded)).toBe(false)

    const failure = await failureOf(openSession(access, options))
    expect(failure.kind).toBe("hostkey")
    expect(failure.hop).toBe(`host root@${h1.ip}:22`)
    expect(failure.message).toBe(
      `host root@${h1.ip}:22: the host key has changed: recorded ${keygenFingerprint(recorded)}, presented ${keygenFingerprint(presented)} (another machine may be answering at this address)`
    )

    // Not retried: a second try would first wait the 10-minute backoff (past this test's timeout).
    const pool = new SshPool({ ...options, reconnectAttempts: 5, backoffMs: 600_000, maxBackoffMs: 600_000, idleCloseMs: 1_000 })
    try {
      expect((await failureOf(pool.session(access))).kind).toBe("hostkey")
    } finally {
      pool.closeAll()
    }
    // The new key, once recorded, is accepted.
    ;(await openSession({ ...access, hostKey: presented }, options)).close()
  })

  it("refuses a jump host whose key changed, naming the jump host", async () => {
    const [h0] = hosts.hosts
    const hidden = hosts.hidden!
    const recorded = hosts.hostKey(h0)
    const access = {
      hostname: hidden.ip,
      port: hidden.port,
      user: hidden.user,
      privateKey: hosts.privateKey,
      hostKey: hosts.hostKey(hidden),
      proxyJump: { hostname: h0.ip, port: h0.port, user: h0.user, privateKey: hosts.privateKey, hostKey: recorded }
    }
    const presented = await hosts.rekey(h0)
    const failure = await failureOf(openSession(access, options))
    expect(failure.kind).toBe("hostkey")
    expect(failure.hop).toBe(`jump host root@${h0.ip}:22`)
    expect(failure.message).toContain(`recorded ${fingerprint(recorded)}, presented ${fingerprint(presented)}`)
  })
})
