/**
 * `ssh RUN`: the host alias a run gets in `~/.dstack/ssh/config` while attached, as upstream's
 * CLI writes it for a server with an SSH proxy (HostName and Port of the proxy, User the job's
 * `sshproxy_upstream_id`, the user's key from `get_my_user`), and the `Include` of that file at
 * the top of `~/.ssh/config` that makes OpenSSH read it. The alias pins the proxy's host keys
 * the server answers (`sshproxy_host_keys` of `/api/server/get_info`) in
 * `~/.dstack/ssh/known_hosts`, so OpenSSH refuses a proxy presenting another key; a server that
 * answers none (upstream's) gets upstream's alias, checked against the user's own known_hosts.
 * Also the IDE links of a dev environment. Node.js and Deno only (node:fs); loaded with `attach`.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import { homedir } from "node:os"
import * as path from "node:path"

/** Where the files live: `home` defaults to `HOME`, then the OS home directory. */
export const sshPaths = (home: string = process.env.HOME && process.env.HOME !== "" ? process.env.HOME : homedir()) => ({
  /** `~/.dstack/ssh`: the run aliases' config and the keys they use. */
  dir: path.join(home, ".dstack", "ssh"),
  config: path.join(home, ".dstack", "ssh", "config"),
  /** The SSH proxies' host keys the aliases are checked against. */
  knownHosts: path.join(home, ".dstack", "ssh", "known_hosts"),
  userConfig: path.join(home, ".ssh", "config")
})

/** A run's alias, as written. */
export interface RunSshHost {
  /** The alias: the run name (`ssh RUN`). */
  readonly host: string
  readonly hostname: string
  readonly port: number
  readonly user: string
  readonly identityFile: string
  /** The file the alias is in (`~/.dstack/ssh/config`). */
  readonly configPath: string
  /** Set when `~/.ssh/config` could not be given the Include: what to add by hand. */
  readonly includeHint?: string
}

/** What the server says of a job's SSH proxy (`job_connection_info`). */
export interface SshProxyInfo {
  readonly hostname: string
  readonly port: number
  readonly upstreamId: string
  /** The proxy's host keys as public lines (`ssh-rsa AAAA…`); empty when the server names none. */
  readonly hostKeys: ReadonlyArray<string>
}

/** A value for an OpenSSH config line: quoted when it has blanks. */
const configValue = (value: string): string => (/[\s"]/.test(value) ? `"${value.replace(/"/g, '\\"')}"` : value)

/** How known_hosts names a host at a port (`host`, or `[host]:port` off port 22). */
export const knownHostsName = (hostname: string, port: number): string => (port === 22 ? hostname : `[${hostname}]:${port}`)

/** Replaces the lines of `file` (a known_hosts) for host `name` with one line per key. */
export const pinHostKeys = (file: string, name: string, keys: ReadonlyArray<string>): void => {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
  const text = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : ""
  const kept = text.split("\n").filter((line) => line.trim() !== "" && line.trim().split(/\s+/)[0] !== name)
  const lines = keys.map((key) => {
    const [type, blob] = key.trim().split(/\s+/)
    if (type === undefined || blob === undefined) throw new Error(`the server's SSH proxy host key is not a public key line: ${JSON.stringify(key.slice(0, 80))}`)
    return `${name} ${type} ${blob}`
  })
  const tmp = `${file}.${process.pid}.tmp`
  fs.writeFileSync(tmp, [...kept, ...lines].map((l) => `${l}\n`).join(""), { mode: 0o600 })
  fs.renameSync(tmp, file)
}

/** Replaces (or removes, with `options` undefined) the `Host <host>` block of an OpenSSH config file. */
export const updateSshConfig = (file: string, host: string, options: Readonly<Record<string, string | number>> | undefined): void => {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 })
  let kept = ""
  let copying = true
  const text = fs.existsSync(file) ? fs.readFileSync(file, "utf8") : ""
  for (const line of text.split(/(?<=\n)/)) {
    const m = /^Host\s+(\S+)\s*$/.exec(line.trim())
    if (m !== null) copying = m[1] !== host
    if (copying) kept += line
  }
  if (kept !== "" && !kept.endsWith("\n")) kept += "\n"
  const block = options === undefined ? "" : `Host ${host}\n${Object.entries(options).map(([k, v]) => `    ${k} ${v}\n`).join("")}`
  fs.writeFileSync(file, kept + block, { mode: 0o600 })
}

/** Puts `Include <config>` at the top of `~/.ssh/config` unless it is there; a hint when it cannot. */
export const includeInUserConfig = (paths: ReturnType<typeof sshPaths>, home: string): string | undefined => {
  const shown = paths.config.startsWith(home + path.sep) ? `~/${path.relative(home, paths.config)}` : paths.config
  const include = `Include ${shown}\n`
  try {
    const current = fs.existsSync(paths.userConfig) ? fs.readFileSync(paths.userConfig, "utf8") : ""
    if (current.includes(include) || current.includes(`Include ${paths.config}\n`)) return undefined
    fs.mkdirSync(path.dirname(paths.userConfig), { recursive: true, mode: 0o700 })
    fs.writeFileSync(paths.userConfig, include + current, { mode: 0o600 })
    return undefined
  } catch (error) {
    return `cannot update ${paths.userConfig} (${error instanceof Error ? error.message : String(error)}): add \`${include.trim()}\` at its top by hand for \`ssh <run name>\` and the IDE links to work`
  }
}

/**
 * Writes the alias `runName` for a job behind the server's SSH proxy, with the user's private
 * key kept beside it (mode 0600, named by the key's hash), and the Include in `~/.ssh/config`.
 */
export const writeRunSshHost = (runName: string, proxy: SshProxyInfo, privateKey: string, home?: string): RunSshHost => {
  const base = home ?? (process.env.HOME && process.env.HOME !== "" ? process.env.HOME : homedir())
  const paths = sshPaths(base)
  fs.mkdirSync(paths.dir, { recursive: true, mode: 0o700 })
  const identityFile = path.join(paths.dir, `id_${createHash("sha256").update(privateKey).digest("hex").slice(0, 12)}`)
  if (!fs.existsSync(identityFile)) fs.writeFileSync(identityFile, privateKey.endsWith("\n") ? privateKey : `${privateKey}\n`, { mode: 0o600 })
  const user = `${proxy.upstreamId}_root`
  // The keys the server named are the only ones accepted; without any, OpenSSH checks the
  // user's own known_hosts as it would for upstream's alias.
  let hostKeyOptions: Record<string, string> = {}
  if (proxy.hostKeys.length > 0) {
    pinHostKeys(paths.knownHosts, knownHostsName(proxy.hostname, proxy.port), proxy.hostKeys)
    hostKeyOptions = { UserKnownHostsFile: configValue(paths.knownHosts), StrictHostKeyChecking: "yes" }
  }
  updateSshConfig(paths.config, runName, {
    HostName: proxy.hostname,
    Port: proxy.port,
    User: user,
    IdentityFile: configValue(identityFile),
    IdentitiesOnly: "yes",
    ...hostKeyOptions,
    LogLevel: "ERROR",
    ServerAliveInterval: 15
  })
  const hint = includeInUserConfig(paths, base)
  return { host: runName, hostname: proxy.hostname, port: proxy.port, user, identityFile, configPath: paths.config, ...(hint !== undefined ? { includeHint: hint } : {}) }
}

/** Removes a run's alias (on detach). */
export const removeRunSshHost = (runName: string, home?: string): void => {
  const paths = sshPaths(home)
  if (fs.existsSync(paths.config)) updateSshConfig(paths.config, runName, undefined)
}

/** The IDE's remote-SSH link to a run (as upstream): `vscode://vscode-remote/ssh-remote+RUN/<dir>`. */
export const ideLink = (ide: "vscode" | "cursor", runName: string, workingDir: string): string =>
  `${ide}://vscode-remote/ssh-remote+${runName}${workingDir.startsWith("/") ? workingDir : `/${workingDir}`}`

/**
 * The job's SSH proxy from the server's run answer (`job_connection_info` of the run's first
 * job), its host keys (`/api/server/get_info`), and the user's private key; undefined when the
 * server runs no proxy.
 */
export const fetchSshAccess = async (server: { readonly url: string; readonly token: string; readonly project: string }, runName: string): Promise<{ proxy: SshProxyInfo; privateKey: string } | undefined> => {
  const post = async (route: string, body: unknown) => {
    const res = await fetch(`${server.url.replace(/\/$/, "")}${route}`, { method: "POST", headers: { authorization: `Bearer ${server.token}`, "content-type": "application/json" }, body: JSON.stringify(body) })
    if (!res.ok) throw new Error(`${route} answered ${res.status}: ${(await res.text()).slice(0, 200)}`)
    return res.json() as Promise<any>
  }
  const run = await post(`/api/project/${encodeURIComponent(server.project)}/runs/get`, { run_name: runName })
  const info = run?.jobs?.[0]?.job_connection_info
  if (info?.sshproxy_hostname == null || info.sshproxy_upstream_id == null) return undefined
  const me = await post("/api/users/get_my_user", {})
  if (typeof me?.ssh_private_key !== "string" || me.ssh_private_key === "") return undefined
  const serverInfo = await post("/api/server/get_info", {})
  const keys: unknown = serverInfo?.sshproxy_host_keys
  const hostKeys = Array.isArray(keys) ? keys.filter((k): k is string => typeof k === "string" && k.trim() !== "") : []
  return { proxy: { hostname: info.sshproxy_hostname, port: info.sshproxy_port ?? 22, upstreamId: info.sshproxy_upstream_id, hostKeys }, privateKey: me.ssh_private_key }
}
