// Reading the keys of a fleet file on the client, as upstream's CLI does: every `identity_file`
// (ssh_config's, each host's, each jump host's) is read here and sent as `ssh_key` {public,
// private}; the server never sees the client's paths' contents any other way.
import { execFile } from "node:child_process"
import { readFile } from "node:fs/promises"
import { homedir } from "node:os"
import { resolve } from "node:path"
import { promisify } from "node:util"
import type { FleetConfiguration, SshKey } from "@dstack-ts/core"
import { CliError } from "./context.ts"

const run = promisify(execFile)

/** `~/x` and relative paths as the user meant them (relative to the configuration file). */
const expand = (file: string, baseDir: string) => (file.startsWith("~/") ? resolve(homedir(), file.slice(2)) : resolve(baseDir, file))

/** The key pair of an identity file: the private key, and the public one from `FILE.pub` or `ssh-keygen -y`. */
export const readKeyPair = async (identityFile: string, baseDir: string, where: string): Promise<SshKey> => {
  const path = expand(identityFile, baseDir)
  const privateKey = await readFile(path, "utf8").catch((e: NodeJS.ErrnoException) => {
    throw new CliError(`${where}: cannot read identity_file ${identityFile} (${e.code ?? e.message})`)
  })
  const fromPub = await readFile(`${path}.pub`, "utf8").then((t) => t.trim(), () => undefined)
  const publicKey = fromPub ?? (await run("ssh-keygen", ["-y", "-f", path]).then((r) => r.stdout.trim(), () => undefined))
  if (publicKey === undefined || publicKey === "") {
    throw new CliError(`${where}: no public key for ${identityFile}: write it beside the key (ssh-keygen -y -f ${identityFile} > ${identityFile}.pub)`)
  }
  return { public: publicKey, private: privateKey }
}

/** The configuration with `ssh_key` filled in from every `identity_file` it names. */
export const withKeys = async (configuration: FleetConfiguration, baseDir: string): Promise<FleetConfiguration> => {
  const ssh = configuration.sshConfig
  if (ssh === undefined) return configuration
  const cache = new Map<string, Promise<SshKey>>()
  const key = (file: string, where: string) => {
    let pending = cache.get(file)
    if (pending === undefined) cache.set(file, (pending = readKeyPair(file, baseDir, where)))
    return pending
  }
  const jump = async (j: NonNullable<typeof ssh.proxyJump>, where: string) =>
    j.identityFile === undefined || j.sshKey !== undefined ? j : { ...j, sshKey: await key(j.identityFile, where) }
  return {
    ...configuration,
    sshConfig: {
      ...ssh,
      ...(ssh.identityFile !== undefined && ssh.sshKey === undefined ? { sshKey: await key(ssh.identityFile, "ssh_config.identity_file") } : {}),
      ...(ssh.proxyJump !== undefined ? { proxyJump: await jump(ssh.proxyJump, "ssh_config.proxy_jump.identity_file") } : {}),
      hosts: await Promise.all(ssh.hosts.map(async (h, i) => ({
        ...h,
        ...(h.identityFile !== undefined && h.sshKey === undefined ? { sshKey: await key(h.identityFile, `ssh_config.hosts[${i}].identity_file`) } : {}),
        ...(h.proxyJump !== undefined ? { proxyJump: await jump(h.proxyJump, `ssh_config.hosts[${i}].proxy_jump.identity_file`) } : {})
      })))
    }
  }
}
