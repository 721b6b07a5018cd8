/**
 * The server's SSH proxy, as upstream's dstack-sshproxy serves its CLI's attach: an SSH server
 * (the `ssh2` library) where the user name `<upstream_id>_<user>` names a running job (its
 * latest submission's id as 32 hex digits), the run owner's key or the run spec's `ssh_key_pub`
 * authenticates, and `direct-tcpip` channels (`ssh -L`) to `localhost:<port>` reach the job's
 * port, or the runner's own HTTP API for upstream's runner port 10999, through the runner
 * transport's forward (JobForward.ts). A `session` channel's shell or command runs where the job
 * runs, through the runner (SshProxySession.ts). When the job ends, its connections are closed
 * with a message.
 *
 * A job is found by one indexed read of its run (`runs.getBySubmissionId`), at authentication
 * and every `jobCheckIntervalMs` for each job with open connections; the owner's public key is
 * read at authentication only, and kept until the store reports a change to users.
 */
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as path from "node:path"
import { Effect, Exit, type ManagedRuntime, Scope } from "effect"
import type { Connection, ParsedKey, Server as Ssh2Server } from "ssh2"
import { type JobProvisioningData, latestSubmission } from "../domain/Job.ts"
import type { Run } from "../domain/Run.ts"
import { isRunStatusFinished, type RunStatus } from "../domain/Status.ts"
import type { Compute } from "../engine/Compute.ts"
import { decodeRow } from "../engine/RunRecord.ts"
import type { ForwardedPort } from "../ports/RunnerTransport.ts"
import { StateStore, type StoredDocument } from "../ports/StateStore.ts"
import { openJobForward, RUNNER_HTTP_PORT } from "./JobForward.ts"
import { upstreamIdOf } from "./SshProxyInfo.ts"
import { handleSession, holdPresence, type OpenSession } from "./SshProxySession.ts"
import { generateUserSshKey } from "./UserSshKeys.ts"

export interface SshProxyOptions {
  /** The port to listen on (0: any free one). */
  readonly port: number
  /** The address to bind (default `127.0.0.1`). */
  readonly bind?: string | undefined
  /** The file holding the proxy's host key (PEM); made, mode 0600, when missing. */
  readonly hostKeyFile: string
  /** How often open connections are checked against their job (its end closes them); default 2000 ms. */
  readonly jobCheckIntervalMs?: number | undefined
}

export interface RunningSshProxy {
  /** The port the proxy listens on. */
  readonly port: number
  /** The host key's public line (`ssh-rsa AAAA…`), for a known_hosts entry. */
  readonly hostPublicKey: string
  /** Stops listening and ends every connection and the forwards they opened. */
  readonly close: () => Promise<void>
}

/** The job a proxy user name names, while its latest submission runs. */
interface ProxiedJob {
  readonly upstreamId: string
  readonly project: string
  readonly runName: string
  readonly pd: JobProvisioningData
  /** Job ports the client may reach (`ports` of the configuration, the service port). */
  readonly ports: ReadonlyArray<number>
  /** The run owner, whose SSH key is admitted, and the run spec's `ssh_key_pub`, also admitted. */
  readonly owner: string
  readonly specKey: string | undefined
}

const USERNAME = /^([0-9a-f]{32})(?:_(.+))?$/

/** The longest the proxy uses a user's public key without the store saying it changed. */
const KEY_TTL_MS = 5_000

/** The submission id (a UUID) whose upstream id (its 32 hex digits) is `upstreamId`. */
const submissionIdOf = (upstreamId: string): string =>
  `${upstreamId.slice(0, 8)}-${upstreamId.slice(8, 12)}-${upstreamId.slice(12, 16)}-${upstreamId.slice(16, 20)}-${upstreamId.slice(20)}`

/** The job of `run` whose latest submission has upstream id `upstreamId`, as the proxy serves it; undefined when it does not run. */
const proxiedJob = (run: Run, upstreamId: string): ProxiedJob | undefined => {
  for (const job of run.jobs) {
    const sub = latestSubmission(job)
    if (sub === undefined || upstreamIdOf(sub.id) !== upstreamId) continue
    const pd = sub.jobProvisioningData
    if (sub.status !== "running" || pd === undefined || pd.hostname === null || pd.hostname === "") return undefined
    const ports = [...new Set([...job.jobSpec.appSpecs.map((a) => a.port), ...(job.jobSpec.servicePort !== undefined ? [job.jobSpec.servicePort] : [])])]
    return { upstreamId, project: run.projectName, runName: run.runSpec.runName ?? "(unnamed)", pd, ports, owner: run.user, specKey: run.runSpec.sshKeyPub }
  }
  return undefined
}

/**
 * The running job whose latest submission has upstream id `upstreamId`; undefined when none
 * runs (no live run has that submission, the run has finished, or a newer submission of the
 * job replaced it). One indexed read of the store (`runs.getBySubmissionId`). Exported for its
 * tests.
 */
export const findJob = (upstreamId: string) =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const row = yield* store.runs.getBySubmissionId(submissionIdOf(upstreamId)).pipe(
      Effect.map((row): StoredDocument | undefined => row),
      Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(undefined))
    )
    if (row === undefined || isRunStatusFinished(row.status as RunStatus)) return undefined
    const { record } = yield* decodeRow(row)
    return proxiedJob(record.run, upstreamId)
  })

type Ssh2 = typeof import("ssh2")
let ssh2: Promise<Ssh2> | undefined
/** ssh2 is CommonJS: its exports come as the default export under ESM. */
const loadSsh2 = (): Promise<Ssh2> => (ssh2 ??= import("ssh2").then((m) => ((m as { default?: Ssh2 }).default ?? m) as Ssh2))

/** The proxy's host key: read from `file`, or made (RSA, PKCS#1 PEM) and written with mode 0600. */
const hostKey = async (file: string): Promise<string> => {
  try {
    return await fs.readFile(file, "utf8")
  } catch (error) {
    if ((error as { code?: unknown }).code !== "ENOENT") throw error
  }
  const pair = await Effect.runPromise(generateUserSshKey("dstack-sshproxy"))
  await fs.mkdir(path.dirname(file), { recursive: true })
  // `wx`: a second server starting at the same time keeps the key the first one wrote.
  await fs.writeFile(file, pair.privateKey, { mode: 0o600, flag: "wx" }).catch((error: { code?: unknown }) => {
    if (error.code !== "EEXIST") throw error
  })
  return fs.readFile(file, "utf8")
}

/** Whether the client's key (its public blob) is `a`. */
const sameKey = (a: ParsedKey, data: Buffer): boolean => Buffer.from(a.getPublicSSH()).equals(data)

/**
 * Starts the SSH proxy for a server's runtime (its stores and compute). Each authenticated
 * connection opens a forward per job port it asks for, once, closed with the connection.
 */
export const startSshProxy = async (
  runtime: ManagedRuntime.ManagedRuntime<StateStore | Compute, unknown>,
  options: SshProxyOptions
): Promise<RunningSshProxy> => {
  const { Server, utils } = await loadSsh2()
  const keyText = await hostKey(options.hostKeyFile)
  const parsedHost = utils.parseKey(keyText)
  if (parsedHost instanceof Error) throw new Error(`The SSH proxy's host key ${options.hostKeyFile} cannot be read: ${parsedHost.message}`)
  const hostParsed = Array.isArray(parsedHost) ? parsedHost[0] : parsedHost
  const hostPublicKey = `${hostParsed.type} ${Buffer.from(hostParsed.getPublicSSH()).toString("base64")}`
  const connections = new Set<Connection>()
  // What the proxy lives with until it closes: its watch on the store.
  const proxyScope = Effect.runSync(Scope.make())
  /**
   * Users' public keys as read from the store (or being read), until the store reports a change
   * to users (`access`: `refresh_ssh_key` here at once, on another replica by the database's
   * notification) and for at most `KEY_TTL_MS` in any case. A read under way when a change comes
   * is dropped with the rest, so no key read before a change is used after it.
   */
  const userKeys = new Map<string, { readonly at: number; readonly key: Promise<string | undefined> }>()
  await runtime.runPromise(
    Effect.flatMap(StateStore, (store) => store.watch((change) => (change.kind === "access" ? userKeys.clear() : undefined))).pipe(Scope.extend(proxyScope))
  )
  const userKey = (username: string): Promise<string | undefined> => {
    const hit = userKeys.get(username)
    if (hit !== undefined && Date.now() - hit.at < KEY_TTL_MS) return hit.key
    const entry = {
      at: Date.now(),
      key: runtime.runPromise(Effect.flatMap(StateStore, (store) => store.users.getSshKey(username))).then((pair) => pair?.publicKey)
    }
    userKeys.set(username, entry)
    entry.key.catch(() => {
      if (userKeys.get(username) === entry) userKeys.delete(username)
    })
    return entry.key
  }
  /** The keys a job admits: its run owner's and its run spec's `ssh_key_pub`. */
  const admittedKeys = async (job: ProxiedJob): Promise<ReadonlyArray<ParsedKey>> => {
    const keys: Array<ParsedKey> = []
    for (const text of [job.specKey, await userKey(job.owner)]) {
      if (text === undefined || text.trim() === "") continue
      const parsed = utils.parseKey(text)
      if (!(parsed instanceof Error)) keys.push(Array.isArray(parsed) ? parsed[0] : parsed)
    }
    return keys
  }
  /** Authenticated connections by the job they reach, for closing them when it ends. */
  const byJob = new Map<string, Map<Connection, { readonly runName: string; readonly sessions: Set<OpenSession> }>>()
  const endedMessage = (runName: string) => `dstack: the job of run ${runName} has ended; closing the connection`
  const closeEnded = (upstreamId: string) => {
    const open = byJob.get(upstreamId)
    if (open === undefined) return
    byJob.delete(upstreamId)
    for (const [client, { runName, sessions }] of open) {
      for (const s of [...sessions]) s.close(endedMessage(runName))
      // The channels' last words go out before the connection ends.
      setTimeout(() => client.end(), 100)
    }
  }
  let checking = false
  const check = setInterval(() => {
    if (checking || byJob.size === 0) return
    checking = true
    const ids = [...byJob.keys()]
    Promise.all(ids.map((id) => runtime.runPromise(findJob(id)).then((found) => (found === undefined ? closeEnded(id) : undefined), () => undefined)))
      .finally(() => (checking = false))
  }, options.jobCheckIntervalMs ?? 2000)
  check.unref?.()

  const onConnection = (client: Connection) => {
    connections.add(client)
    let job: ProxiedJob | undefined
    const scope = Effect.runSync(Scope.make())
    const forwards = new Map<number | "runner", Promise<ForwardedPort>>()
    client.on("error", () => {
      // A client that goes away mid-handshake; nothing to tell anyone.
    })
    const sessions = new Set<OpenSession>()
    client.on("close", () => {
      connections.delete(client)
      if (job !== undefined) {
        const open = byJob.get(job.upstreamId)
        open?.delete(client)
        if (open?.size === 0) byJob.delete(job.upstreamId)
      }
      void Effect.runPromise(Scope.close(scope, Exit.void))
    })
    client.on("authentication", (ctx) => {
      if (ctx.method !== "publickey") return ctx.reject(["publickey"])
      const match = USERNAME.exec(ctx.username)
      if (match === null) return ctx.reject(["publickey"])
      runtime
        .runPromise(findJob(match[1]))
        .then(async (found) => (found === undefined ? undefined : { found, keys: await admittedKeys(found) }))
        .then(
          (admitted) => {
            const key = admitted?.keys.find((k) => sameKey(k, ctx.key.data))
            if (admitted === undefined || key === undefined) return ctx.reject(["publickey"])
            // Without a signature the client only asks whether the key would do.
            if (ctx.signature === undefined) return ctx.accept()
            if (key.verify(ctx.blob!, ctx.signature, ctx.hashAlgo) !== true) return ctx.reject(["publickey"])
            job = admitted.found
            ctx.accept()
          },
          (error: unknown) => {
            console.error("[sshproxy] looking up a job failed:", error)
            ctx.reject(["publickey"])
          }
        )
    })
    const forwardTo = (proxied: ProxiedJob, which: number | "runner"): Promise<ForwardedPort> => {
      let forward = forwards.get(which)
      if (forward === undefined) {
        forward = runtime.runPromise(openJobForward(proxied.project, proxied.pd, which, submissionIdOf(proxied.upstreamId)).pipe(Scope.extend(scope), Effect.mapError(({ error }) => new Error(error.message ?? error.reason))))
        forwards.set(which, forward)
        // A forward that failed is tried again by the next channel.
        forward.catch(() => forwards.delete(which))
      }
      return forward
    }
    client.on("ready", () => {
      const proxied = job!
      let open = byJob.get(proxied.upstreamId)
      if (open === undefined) byJob.set(proxied.upstreamId, (open = new Map()))
      open.set(client, { runName: proxied.runName, sessions })
      const leave = holdPresence(() => forwardTo(proxied, "runner").then((fwd) => ({ host: fwd.localHost, port: fwd.localPort })))
      client.once("close", leave)
      client.on("tcpip", (accept, reject, info) => {
        const local = info.destIP === "localhost" || info.destIP === "127.0.0.1" || info.destIP === "::1"
        const which = info.destPort === RUNNER_HTTP_PORT ? "runner" : proxied.ports.includes(info.destPort) ? info.destPort : undefined
        if (!local || which === undefined) return reject()
        forwardTo(proxied, which).then(
          (fwd) => {
            const socket = net.connect(fwd.localPort, fwd.localHost)
            let connected = false
            socket.once("connect", () => {
              connected = true
              const channel = accept()
              channel.pipe(socket).pipe(channel)
              channel.on("error", () => socket.destroy())
              socket.on("error", () => channel.destroy())
              socket.on("close", () => channel.destroy())
            })
            // Nothing listening there yet (the job's service still starting): the client's ssh
            // reports the refused channel.
            socket.once("error", () => {
              if (!connected) reject()
            })
          },
          (error: unknown) => {
            console.error(`[sshproxy] cannot reach port ${info.destPort} of run ${proxied.runName}: ${error instanceof Error ? error.message : String(error)}`)
            reject()
          }
        )
      })
      client.on("session", (accept) => {
        handleSession(accept(), {
          runName: proxied.runName,
          open: sessions,
          runner: () => forwardTo(proxied, "runner").then((fwd) => ({ host: fwd.localHost, port: fwd.localPort })),
          jobEnded: () => runtime.runPromise(findJob(proxied.upstreamId)).then((found) => (found === undefined ? endedMessage(proxied.runName) : undefined))
        })
      })
    })
  }

  const server: Ssh2Server = new Server({ hostKeys: [keyText] }, onConnection)
  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port, options.bind ?? "127.0.0.1", () => {
      server.off("error", reject)
      resolve((server.address() as net.AddressInfo).port)
    })
  })
  let closing: Promise<void> | undefined
  return {
    port,
    hostPublicKey,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        clearInterval(check)
        void Effect.runPromise(Scope.close(proxyScope, Exit.void))
        server.close(() => resolve())
        for (const c of connections) c.end()
      }))
  }
}
