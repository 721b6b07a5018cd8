/**
 * The `remote` backend (upstream's name for SSH fleet instances): hosts the user already has.
 * It offers nothing from a catalog; `remoteHosts.provision` logs in over SSH, detects the
 * machine (CPUs, memory, disk, architecture, NVIDIA/AMD GPUs), ships the server's runner
 * bundle (checked by sha256, re-shipped when it changes) and starts it as a supervised service
 * on the host's 127.0.0.1 (systemd where the host runs it, else a restart loop), and
 * `deprovision` stops it and removes its files. Nothing is downloaded from the internet: the
 * host needs `node` (20+) and, for image jobs, Docker. Host keys: a host with a recorded key
 * (`RemoteHost.hostKey`) must present it; provisioning answers the key it saw, to be recorded.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Backend, type BackendFactory, InstanceType, RunnerLaunch, configDecoder } from "@dstack-ts/core"
import { Effect, Schema, type Scope } from "effect"
import { type HostFacts, parseProbe, resourcesOf } from "./internal/HostFacts.ts"
import { PROBE, REMOVE, START, SUPERVISOR, writeFilesScript } from "./internal/HostScripts.ts"
import { describeHop, dockerPing, type ExecResult, HopFailure, type HostAccess, openSession, runScript, type Session, shQuote, waitHealthy } from "@dstack-ts/ssh"

const TYPE = "remote"
const MODULE = "RemoteBackend"

/** Options of the remote backend (camelCase; the configuration uses snake_case keys). */
export interface RemoteBackendOptions {
  /**
   * The runner build shipped to hosts: an entry file, bundled into one ES module with esbuild
   * (a `.mjs`/`.js` file is shipped as it is). Default: the server build's
   * (`createServer({ runner: { entry } })`; `dstack server` uses @dstack-ts/cli's).
   */
  readonly runnerEntry?: string
  /** The port the runner listens on, on the host's 127.0.0.1. Default 10999 (upstream's). */
  readonly runnerPort?: number
  /**
   * How the runner is kept running: `systemd` (a system unit; needs root or passwordless sudo),
   * `supervisor` (a restart loop started with setsid), or `auto` (default): systemd where the
   * host runs it, unless the host's environment says `DSTACK_RUNNER_SERVICE=supervisor`.
   */
  readonly service?: "auto" | "systemd" | "supervisor"
  /** Refuse hosts where Docker does not answer this user (for fleets that run images). Default false. */
  readonly requireDocker?: boolean
  /** Refuse hosts with less free disk under the user's home. Default 1024 MiB. */
  readonly minFreeDiskMib?: number
  /** Where the runner's files go, under the user's home. Default `.dstack-ts/remote`. */
  readonly installDir?: string
  /** How long the runner may take to answer its healthcheck after starting. Default 60 s. */
  readonly startTimeoutSeconds?: number
  /** TCP connect, handshake and login, per hop. Default 10 s. */
  readonly connectTimeoutSeconds?: number
  /** The GPU tools run on the host. Defaults `nvidia-smi` and `amd-smi` from its PATH. */
  readonly nvidiaSmi?: string
  readonly amdSmi?: string
}

/** The plugin's configuration section: the options above with snake_case keys. */
export const RemoteBackendConfig = Schema.Struct({
  type: Schema.optional(Schema.Literal(TYPE)),
  runnerEntry: Schema.optional(Schema.NonEmptyString).pipe(Schema.fromKey("runner_entry")),
  runnerPort: Schema.optional(Schema.Int.pipe(Schema.between(1, 65535))).pipe(Schema.fromKey("runner_port")),
  service: Schema.optional(Schema.Literal("auto", "systemd", "supervisor")),
  requireDocker: Schema.optional(Schema.Boolean).pipe(Schema.fromKey("require_docker")),
  minFreeDiskMib: Schema.optional(Schema.Number.pipe(Schema.nonNegative())).pipe(Schema.fromKey("min_free_disk_mib")),
  installDir: Schema.optional(Schema.NonEmptyString.pipe(Schema.pattern(/^[A-Za-z0-9._/-]+$/))).pipe(Schema.fromKey("install_dir")),
  startTimeoutSeconds: Schema.optional(Schema.Number.pipe(Schema.positive())).pipe(Schema.fromKey("start_timeout_seconds")),
  connectTimeoutSeconds: Schema.optional(Schema.Number.pipe(Schema.positive())).pipe(Schema.fromKey("connect_timeout_seconds")),
  nvidiaSmi: Schema.optional(Schema.NonEmptyString).pipe(Schema.fromKey("nvidia_smi")),
  amdSmi: Schema.optional(Schema.NonEmptyString).pipe(Schema.fromKey("amd_smi"))
})

/** What `backendData` of a provisioned host says (no secrets). */
export interface RemoteHostData {
  readonly dir: string
  readonly service: "systemd" | "supervisor"
  readonly bundleSha256: string
  readonly nodeVersion: string
  readonly docker: boolean
}

const fail = (method: string, reason: Backend.BackendErrorReason, message: string, cause?: unknown) =>
  Backend.fail(MODULE, method, reason, message, cause)

const accessOf = (host: Backend.RemoteHost): HostAccess => ({
  hostname: host.hostname,
  port: host.port,
  user: host.user,
  privateKey: host.privateKey,
  ...(host.hostKey === undefined ? {} : { hostKey: host.hostKey }),
  ...(host.proxyJump === undefined ? {} : { proxyJump: host.proxyJump })
})

/** A name safe in a path and a systemd unit name. */
const safeName = (id: string) => id.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 100)

const session = (method: string, host: Backend.RemoteHost, connectTimeoutMs: number): Effect.Effect<Session, Backend.BackendError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => openSession(accessOf(host), { readyTimeoutMs: connectTimeoutMs, keepaliveIntervalMs: 10_000, keepaliveCountMax: 3 }),
      catch: (error) => {
        const hop = error instanceof HopFailure ? error : undefined
        return new Backend.BackendError({
          module: MODULE,
          method,
          reason: hop?.kind === "auth" || hop?.kind === "hostkey" ? "PermissionDenied" : hop?.kind === "timeout" ? "Timeout" : hop?.kind === "key" ? "Invalid" : "Transport",
          message: `cannot log in to ${describeHop(host)}: ${error instanceof Error ? error.message : String(error)}${
            hop?.kind === "hostkey" ? "; if its key was replaced on purpose, remove the host from the fleet and add it again" : ""
          }`,
          cause: error
        })
      }
    }),
    (s) => Effect.sync(() => s.close())
  )

/** Runs a script with `sh -s -- ARGS` on the host, its text (or a stream) on stdin. */
const exec = (
  method: string,
  host: Backend.RemoteHost,
  s: Session,
  script: string | NodeJS.ReadableStream,
  args: ReadonlyArray<string>,
  command?: string
): Effect.Effect<ExecResult, Backend.BackendError> =>
  Effect.tryPromise({
    try: () => runScript(s, script, args, command),
    catch: (cause) =>
      new Backend.BackendError({
        module: MODULE,
        method,
        reason: "Transport",
        message: `the SSH connection to ${describeHop(host)} failed: ${cause instanceof Error ? cause.message : String(cause)}`,
        cause
      })
  })

/** Writes `content` to `file` on the host (through a temporary file, so a reader never sees half of it). */
const writeFile = (
  method: string,
  host: Backend.RemoteHost,
  s: Session,
  file: string,
  content: string | NodeJS.ReadableStream,
  mode: string
) =>
  Effect.flatMap(
    exec(method, host, s, content, [], `sh -c ${shQuote(`mkdir -p "$(dirname "$0")" && cat > "$0.tmp" && chmod ${mode} "$0.tmp" && mv "$0.tmp" "$0"`)} ${shQuote(file)}`),
    (r) =>
      r.code === 0 ? Effect.void : /no space left/i.test(r.stderr)
        ? fail(method, "NoCapacity", `disk full on ${describeHop(host)}: cannot write ${file} (${r.stderr.trim()})`)
        : fail(method, "Unknown", `cannot write ${file} on ${describeHop(host)}: ${r.stderr.trim() || `exit status ${r.code}`}`)
  )

/** Why the probed host cannot run the runner, or undefined. */
const unusable = (facts: HostFacts, host: Backend.RemoteHost, options: RemoteBackendOptions) => {
  const where = describeHop(host)
  if (facts.node === undefined) {
    return { reason: "Invalid" as const, message: `${where} has no node on its PATH: the runner needs Node.js 20 or later installed on the host` }
  }
  const major = Number(/^v(\d+)/.exec(facts.nodeVersion ?? "")?.[1] ?? 0)
  if (major < 20) return { reason: "Invalid" as const, message: `${where} has node ${facts.nodeVersion}: the runner needs Node.js 20 or later` }
  if (options.requireDocker && !facts.docker) {
    return {
      reason: "Invalid" as const,
      message: `no Docker on ${where}: /var/run/docker.sock does not answer ${host.user} (${facts.dockerProblem ?? "no answer"}), and this backend requires Docker (require_docker)`
    }
  }
  const minFree = options.minFreeDiskMib ?? 1024
  if (!(facts.diskFreeMib >= minFree)) {
    return { reason: "NoCapacity" as const, message: `disk full on ${where}: ${facts.diskFreeMib} MiB free under ${facts.home}, the runner needs at least ${minFree} MiB` }
  }
  return undefined
}

/** The remote backend: no offers of its own, `remoteHosts` provisions the hosts of SSH fleets. */
export interface RemoteBackend extends Backend.Backend {
  readonly remoteHosts: Backend.RemoteHosts
}

/**
 * Makes the remote backend. The runner bundle is built on the first provisioning and removed
 * when the scope closes.
 *
 * @example
 * const backend = yield* RemoteBackend.make({ service: "supervisor" })
 * const host = { hostname: "10.0.0.2", port: 22, user: "root", privateKey }
 * const provisioned = yield* backend.remoteHosts.provision(host, config) // runner on 127.0.0.1:10999 there
 * yield* backend.remoteHosts.deprovision(host, config)
 */
export const make = (options: RemoteBackendOptions = {}): Effect.Effect<RemoteBackend, Backend.BackendError, Scope.Scope> =>
  Effect.gen(function*() {
    const runnerPort = options.runnerPort ?? 10999
    const connectTimeoutMs = (options.connectTimeoutSeconds ?? 10) * 1000
    const startTimeoutSeconds = options.startTimeoutSeconds ?? 60
    const installDir = (options.installDir ?? ".dstack-ts/remote").replace(/^\/+|\/+$/g, "")
    const configured = yield* RunnerLaunch.runnerEntry(options.runnerEntry)

    // The bundle: built once per backend, on first use; removed with the scope.
    const tmp = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-remote-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    const bundle = yield* Effect.cached(
      Effect.gen(function*() {
        if (configured === undefined) {
          return yield* fail(
            "provision",
            "Invalid",
            "no runner build to ship: set runner_entry in the remote backend's configuration, or the server build's runner (createServer({ runner: { entry } }); `dstack server` sets it)"
          )
        }
        const entry = path.resolve(configured)
        if (!fs.existsSync(entry)) return yield* fail("provision", "Invalid", `the runner entry ${entry} does not exist`)
        if (/\.[cm]?js$/.test(entry)) {
          return { file: entry, sha256: createHash("sha256").update(fs.readFileSync(entry)).digest("hex") }
        }
        return yield* Effect.tryPromise({
          try: () => RunnerLaunch.bundleRunner(entry, tmp),
          catch: (cause) => new Backend.BackendError({ module: MODULE, method: "provision", reason: "Invalid", message: `cannot bundle the runner ${entry}: ${String(cause)}`, cause })
        })
      })
    )

    const paths = (home: string, config: Backend.InstanceConfiguration) => {
      const name = safeName(config.instanceId)
      const dir = `${home}/${installDir}/${name}`
      return { dir, unit: `dstack-ts-runner-${name}.service`, bundleUnderHome: `${installDir}/${name}/runner.mjs` }
    }

    const provision = (host: Backend.RemoteHost, config: Backend.InstanceConfiguration) =>
      Effect.scoped(Effect.gen(function*() {
        const where = describeHop(host)
        for (const key of Object.keys(host.env ?? {})) {
          if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) return yield* fail("provision", "Invalid", `env: ${JSON.stringify(key)} is not a variable name`)
        }
        const s = yield* session("provision", host, connectTimeoutMs)
        const probed = yield* exec("provision", host, s, PROBE, [
          options.nvidiaSmi ?? "nvidia-smi",
          options.amdSmi ?? "amd-smi",
          paths("", config).bundleUnderHome
        ])
        if (probed.code !== 0) return yield* fail("provision", "Unknown", `cannot probe ${where}: ${probed.stderr.trim() || `exit status ${probed.code}`}`)
        const ping = yield* Effect.promise(() => dockerPing(s))
        const facts = {
          ...parseProbe(probed.stdout),
          docker: ping.status === 200,
          dockerProblem: ping.status === 200 ? undefined : ping.problem ?? `HTTP ${ping.status}`
        }
        const problem = unusable(facts, host, options)
        if (problem) return yield* fail("provision", problem.reason, problem.message)

        const service = options.service === "supervisor" || options.service === "systemd"
          ? options.service
          : facts.systemd && facts.serviceHint !== "supervisor"
          ? "systemd"
          : "supervisor"
        if (service === "systemd" && !facts.root && !facts.sudo) {
          return yield* fail(
            "provision",
            "PermissionDenied",
            `sudo missing on ${where}: ${host.user} is not root and cannot run sudo without a password, which installing the runner's systemd unit needs (or set service: supervisor)`
          )
        }
        const sudo = facts.root ? "" : "sudo -n"
        const { dir, unit } = paths(facts.home, config)
        const { file, sha256 } = yield* bundle

        // The bundle, when the host does not have this one.
        const shipped = /^bundle_sha256=(.*)$/m.exec(probed.stdout)?.[1] !== sha256
        if (shipped) yield* writeFile("provision", host, s, `${dir}/runner.mjs`, fs.createReadStream(file), "644")

        const env = Object.entries(host.env ?? {}).map(([k, v]) => `export ${k}=${shQuote(v)}\n`).join("")
        const runArgs = `--host 127.0.0.1 --port ${runnerPort} --work-dir ${shQuote(`${dir}/work`)}`
        const files = [
          {
            path: `${dir}/run.sh`,
            content: `#!/bin/sh\n# Starts the dstack-ts runner of instance ${safeName(config.instanceName)}.\n${env}exec ${shQuote(facts.node!)} ${shQuote(`${dir}/runner.mjs`)} ${runArgs}\n`,
            mode: "755"
          },
          { path: `${dir}/supervise.sh`, content: SUPERVISOR, mode: "755" },
          {
            path: `${dir}/${unit}`,
            content: `[Unit]\nDescription=dstack-ts runner (instance ${safeName(config.instanceName)})\nAfter=network-online.target\n\n[Service]\nExecStart=/bin/sh ${dir}/run.sh\nRestart=always\nRestartSec=1\nStandardOutput=append:${dir}/runner.log\nStandardError=append:${dir}/runner.log\n\n[Install]\nWantedBy=multi-user.target\n`,
            mode: "644"
          }
        ]

        // Started unless this very bundle already answers (provisioning again is idempotent).
        const answering = !shipped && (yield* Effect.promise(() => waitHealthy(s, runnerPort, 0)))
        if (!answering) {
          // The service files and the start in one round trip.
          const started = yield* exec("provision", host, s, `set -e\n${writeFilesScript(files)}${START}`, [dir, service, unit, sudo])
          if (started.code !== 0) {
            if (/no space left/i.test(started.stderr)) {
              return yield* fail("provision", "NoCapacity", `disk full on ${where}: cannot write the runner's files under ${dir} (${started.stderr.trim()})`)
            }
            return yield* fail("provision", "Unknown", `cannot start the runner on ${where} (${service}): ${started.stderr.trim() || started.stdout.trim()}`)
          }
          if (!(yield* Effect.promise(() => waitHealthy(s, runnerPort, startTimeoutSeconds)))) {
            const log = yield* exec("provision", host, s, `tail -c 2000 "$1" 2>/dev/null; true`, [`${dir}/runner.log`])
            return yield* fail(
              "provision",
              "Timeout",
              `the runner on ${where} did not answer on 127.0.0.1:${runnerPort} within ${startTimeoutSeconds}s (${service}); the end of ${dir}/runner.log:\n${log.stdout.trim()}`
            )
          }
        }
        const data: RemoteHostData = { dir, service, bundleSha256: sha256, nodeVersion: facts.nodeVersion!, docker: facts.docker }
        const internalIp = host.internalIp ?? facts.ip
        return {
          instanceType: new InstanceType({ name: "ssh", resources: resourcesOf(facts, host.hostname) }),
          runnerPort,
          ...(internalIp === undefined ? {} : { internalIp }),
          backendData: JSON.stringify(data),
          hostKey: s.hostKey,
          ...(s.jumpHostKey === undefined ? {} : { jumpHostKey: s.jumpHostKey })
        } satisfies Backend.ProvisionedHost
      }))

    const deprovision = (host: Backend.RemoteHost, config: Backend.InstanceConfiguration) =>
      Effect.scoped(Effect.gen(function*() {
        const s = yield* session("deprovision", host, connectTimeoutMs)
        const who = yield* exec("deprovision", host, s, `printf '%s\\n%s\\n' "$HOME" "$(id -u)"`, [])
        const [home, uid] = who.stdout.split("\n")
        if (who.code !== 0 || !home) return yield* fail("deprovision", "Unknown", `cannot read the home directory on ${describeHop(host)}: ${who.stderr.trim()}`)
        const { dir, unit } = paths(home, config)
        const removed = yield* exec("deprovision", host, s, REMOVE, [dir, unit, uid === "0" ? "" : "sudo -n"])
        if (removed.code !== 0 || !removed.stdout.includes("removed")) {
          return yield* fail("deprovision", "Unknown", `cannot remove the runner from ${describeHop(host)}: ${removed.stderr.trim() || `exit status ${removed.code}`}`)
        }
      }))

    const backend = Backend.make({
      type: TYPE,
      catalog: () => Effect.succeed([]),
      createInstance: () =>
        fail("createInstance", "Invalid", "remote instances are the hosts of SSH fleets: they are provisioned from the fleet's ssh_config, not created from offers"),
      // The host's runner is removed by `remoteHosts.deprovision` (it needs the host's credentials).
      terminateInstance: () => Effect.void
    })
    return { ...backend, remoteHosts: { provision, deprovision } }
  })

const decodeConfig = configDecoder(RemoteBackendConfig, "remote backend configuration")

/** The plugin's factory: decodes the configuration section and makes the backend; a bad one is `Invalid`, naming every wrong field. */
export const fromConfig: BackendFactory = (config) =>
  decodeConfig(config).pipe(
    Effect.mapError((error) =>
      new Backend.BackendError({
        module: MODULE,
        method: "fromConfig",
        reason: "Invalid",
        message: error.message,
        cause: error.cause
      })
    ),
    Effect.flatMap(({ type: _type, ...options }) => make(options))
  )
