// The `ssh RUN` alias files (SshConfig.ts) in a temporary home: the proxy's host keys pinned in
// ~/.dstack/ssh/known_hosts (a key that changes replaces that proxy's line, other proxies' lines
// stay), upstream's alias when the server names no keys, quoting of paths with blanks, and a
// malformed key refused naming it. OpenSSH itself checks the result in test/e2e/sshproxy.test.ts.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { removeRunSshHost, writeRunSshHost } from "../src/SshConfig.ts"

const homes: Array<string> = []
const home = (name = "home-") => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), name))
  homes.push(dir)
  return dir
}
afterAll(() => homes.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })))

const KEY = "-----BEGIN RSA PRIVATE KEY-----\nstand-in\n-----END RSA PRIVATE KEY-----\n"
const proxy = (hostKeys: ReadonlyArray<string>, port = 2222, hostname = "ssh.example.com") => ({ hostname, port, upstreamId: "a".repeat(32), hostKeys })

describe("the ssh RUN alias", () => {
  it("pins the proxy's host keys; a changed key replaces that proxy's line and keeps the others", () => {
    const dir = home()
    const knownHosts = path.join(dir, ".dstack", "ssh", "known_hosts")
    writeRunSshHost("other", proxy(["ssh-ed25519 AAAAother"], 22, "other.example.com"), KEY, dir)
    const alias = writeRunSshHost("dev", proxy(["ssh-rsa AAAAfirst dstack-sshproxy"]), KEY, dir)
    expect(fs.readFileSync(knownHosts, "utf8")).toBe("other.example.com ssh-ed25519 AAAAother\n[ssh.example.com]:2222 ssh-rsa AAAAfirst\n")
    expect(fs.statSync(knownHosts).mode & 0o777).toBe(0o600)
    const config = fs.readFileSync(alias.configPath, "utf8")
    expect(config).toContain(`Host dev\n    HostName ssh.example.com\n    Port 2222\n    User ${"a".repeat(32)}_root\n`)
    expect(config).toContain(`    UserKnownHostsFile ${knownHosts}\n    StrictHostKeyChecking yes\n`)
    writeRunSshHost("dev", proxy(["ssh-rsa AAAAsecond", "ssh-ed25519 AAAAthird"]), KEY, dir)
    expect(fs.readFileSync(knownHosts, "utf8")).toBe("other.example.com ssh-ed25519 AAAAother\n[ssh.example.com]:2222 ssh-rsa AAAAsecond\n[ssh.example.com]:2222 ssh-ed25519 AAAAthird\n")
    removeRunSshHost("dev", dir)
    expect(fs.readFileSync(alias.configPath, "utf8")).not.toContain("Host dev")
  })

  it("without host keys from the server writes upstream's alias: no host-key lines, the user's known_hosts decides", () => {
    const dir = home()
    const alias = writeRunSshHost("dev", proxy([]), KEY, dir)
    const config = fs.readFileSync(alias.configPath, "utf8")
    expect(config).not.toMatch(/StrictHostKeyChecking|UserKnownHostsFile/)
    expect(fs.existsSync(path.join(dir, ".dstack", "ssh", "known_hosts"))).toBe(false)
  })

  it("quotes paths with blanks, and refuses a host key that is not a public key line", () => {
    const dir = home("home with blanks-")
    const alias = writeRunSshHost("dev", proxy(["ssh-rsa AAAAkey"]), KEY, dir)
    const config = fs.readFileSync(alias.configPath, "utf8")
    expect(config).toContain(`    UserKnownHostsFile "${path.join(dir, ".dstack", "ssh", "known_hosts")}"\n`)
    expect(config).toMatch(/    IdentityFile ".+\/id_[0-9a-f]{12}"\n/)
    expect(() => writeRunSshHost("dev", proxy(["garbage"]), KEY, dir)).toThrow(/host key is not a public key line: "garbage"/)
  })
})
