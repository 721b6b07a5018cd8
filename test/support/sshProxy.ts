// Shared by the SSH proxy suites (test/e2e/sshproxy*.test.ts): a local server with its SSH proxy
// on a free port, the run owner's key (get_my_user) and a stranger's in files, OpenSSH's
// arguments for reaching the proxy directly, running `ssh`, and waiting for a run's job.
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Schema } from "effect"
import { Client } from "@dstack-ts/client"
import { TaskConfiguration } from "../../core/src/domain/Configuration.ts"
import { generateUserSshKey } from "../../core/src/server/UserSshKeys.ts"
import { type LocalServer, startLocalServer } from "./localServer.ts"

export interface ProxyServer extends LocalServer {
  readonly client: Client
  /** A temporary directory for the suite (the keys, the proxy's host key); removed by `close`. */
  readonly dir: string
  /** The run owner's private key file (mode 0600). */
  readonly ownerKey: string
  /** Another user's private key file, and its public line. */
  readonly strangerKey: string
  readonly strangerPublic: string
  /** POSTs to the API with the admin token; anything but 200 throws with the answer. */
  readonly api: (route: string, body: unknown) => Promise<any>
  readonly close: () => Promise<void>
}

/** Starts the server with its SSH proxy advertised as `hostname`, and writes the keys. */
export const startProxyServer = async (options: { readonly token: string; readonly hostname: string; readonly prefix: string; readonly jobCheckIntervalMs?: number }): Promise<ProxyServer> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), options.prefix))
  const local = await startLocalServer({
    token: options.token,
    server: { sshProxy: { port: 0, hostKeyFile: path.join(dir, "sshproxy_host_key"), hostname: options.hostname, jobCheckIntervalMs: options.jobCheckIntervalMs } }
  })
  const api = async (route: string, body: unknown) => {
    const { status, body: answer } = await local.call(route, body)
    if (status !== 200) throw new Error(`${route} answered ${status}: ${JSON.stringify(answer).slice(0, 300)}`)
    return answer
  }
  const me = await api("/api/users/get_my_user", {})
  const ownerKey = path.join(dir, "owner")
  fs.writeFileSync(ownerKey, me.ssh_private_key, { mode: 0o600 })
  const stranger = await Effect.runPromise(generateUserSshKey("stranger"))
  const strangerKey = path.join(dir, "stranger")
  fs.writeFileSync(strangerKey, stranger.privateKey, { mode: 0o600 })
  return {
    ...local,
    client: Client.connect({ name: "main", url: local.serving.url, token: options.token }),
    dir,
    ownerKey,
    strangerKey,
    strangerPublic: stranger.publicKey,
    api,
    close: async () => {
      await local.serving.close()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

/**
 * OpenSSH's arguments for the proxy at 127.0.0.1:`port` with `key`, no config file, no host key
 * check; `logLevel` ERROR by default (INFO also shows refused forwards: `open failed`).
 */
export const proxySshArgs = (key: string, port: number, logLevel: "ERROR" | "INFO" = "ERROR"): Array<string> => [
  "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", `LogLevel=${logLevel}`,
  "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "ConnectTimeout=10",
  "-i", key, "-p", String(port)
]

/** Runs OpenSSH with `args`, `input` on its stdin (then its end): exit code and output. */
export const runSsh = (args: ReadonlyArray<string>, input?: string) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn("ssh", args)
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.stdin.end(input ?? "")
    child.on("exit", (code) => resolve({ code, stdout, stderr }))
  })

/** A task configuration with small resources. */
export const task = (commands: ReadonlyArray<string>, extra: Record<string, unknown> = {}) =>
  Schema.decodeUnknownSync(TaskConfiguration)({ type: "task", commands, resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." }, ...extra })

/** The run once its first job's latest submission has a status `done` accepts. */
export const waitJobStatus = async (api: ProxyServer["api"], name: string, done: (status: string) => boolean) => {
  for (let i = 0; i < 600; i++) {
    const run = await api("/api/project/main/runs/get", { run_name: name })
    const sub = run.jobs[0]?.job_submissions.at(-1)
    if (sub !== undefined && done(sub.status)) return run
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`the job of run ${name} never got there`)
}

export const waitJobRunning = (api: ProxyServer["api"], name: string) => waitJobStatus(api, name, (s) => s === "running")

/** The SSH user name the proxy knows a run's first job by (`<upstream_id>_root`). */
export const proxyUserOf = (run: any): string => `${run.jobs[0].job_connection_info.sshproxy_upstream_id}_root`
