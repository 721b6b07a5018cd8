// The library's pieces that need no SSH server: quoting for sh (checked against a real `sh`),
// and the hop failures of sessions that cannot open (a closed port, a name that does not
// resolve, an unusable key, and the same through a jump host). Logins, tunnels, the pool and
// scripts on hosts run in the transport-ssh and backend-ssh suites, on real sshd hosts.
import { execFileSync } from "node:child_process"
import { generateKeyPairSync } from "node:crypto"
import * as net from "node:net"
import { describe, expect, it } from "vitest"
import { describeHop, HopFailure, openSession, shQuote } from "@dstack-ts/ssh"

const privateKey = generateKeyPairSync("rsa", { modulusLength: 2048, privateKeyEncoding: { type: "pkcs1", format: "pem" }, publicKeyEncoding: { type: "pkcs1", format: "pem" } }).privateKey
const options = { readyTimeoutMs: 5_000, keepaliveIntervalMs: 0, keepaliveCountMax: 3 }

/** A port on 127.0.0.1 that nothing listens on. */
const closedPort = async (): Promise<number> => {
  const server = net.createServer()
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  const port = (server.address() as net.AddressInfo).port
  await new Promise((r) => server.close(r))
  return port
}

const failureOf = async (promise: Promise<unknown>): Promise<HopFailure> => {
  const error = await promise.then(() => undefined, (e) => e)
  expect(error).toBeInstanceOf(HopFailure)
  return error as HopFailure
}

describe("shQuote", () => {
  it("keeps every value one sh word, as written", () => {
    for (const value of ["plain", "", "two words", "it's", "'", "$HOME `id` $(id) \\ \" *", "line\nbreak", "ünï"]) {
      expect(execFileSync("sh", ["-c", `printf %s ${shQuote(value)}`], { encoding: "utf8" })).toBe(value)
    }
  })
})

describe("openSession failures name the hop", () => {
  it("describes IPv6 hosts in brackets", () => {
    expect(describeHop({ user: "root", hostname: "10.0.0.2", port: 22 })).toBe("root@10.0.0.2:22")
    expect(describeHop({ user: "u", hostname: "fd00::2", port: 2222 })).toBe("u@[fd00::2]:2222")
  })

  it("a closed port is unreachable, naming the host", async () => {
    const port = await closedPort()
    const failure = await failureOf(openSession({ hostname: "127.0.0.1", port, user: "root", privateKey }, options))
    expect(failure.kind).toBe("unreachable")
    expect(failure.message).toBe(`host root@127.0.0.1:${port}: connection refused (is sshd running on that port?)`)
  })

  it("a closed jump host fails as the jump host, not the target", async () => {
    const port = await closedPort()
    const failure = await failureOf(openSession({
      hostname: "10.9.9.9",
      port: 22,
      user: "root",
      privateKey,
      proxyJump: { hostname: "127.0.0.1", port, user: "jump", privateKey }
    }, options))
    expect(failure.kind).toBe("unreachable")
    expect(failure.hop).toBe(`jump host jump@127.0.0.1:${port}`)
  })

  it("a name that does not resolve says so", async () => {
    const failure = await failureOf(openSession({ hostname: "no-such-host.invalid", port: 22, user: "root", privateKey }, options))
    expect(failure.kind).toBe("unreachable")
    expect(failure.message).toContain("does not resolve")
  })

  it("an unusable private key is refused before anything is sent", async () => {
    const server = net.createServer((socket) => socket.end("SSH-2.0-OpenSSH_9.2\r\n"))
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
    const port = (server.address() as net.AddressInfo).port
    try {
      const failure = await failureOf(openSession({ hostname: "127.0.0.1", port, user: "root", privateKey: "not a key" }, options))
      expect(failure.kind).toBe("key")
      expect(failure.message).toContain(`host root@127.0.0.1:${port}: the private key cannot be used`)
    } finally {
      await new Promise((r) => server.close(r))
    }
  })
})
