// `dstack server`: starts the default server build (cli/src/defaultBuild.ts: the first-party
// plugins; the embedded state store, or PostgreSQL with DSTACK_DATABASE_URL; file blobs under
// DSTACK_SERVER_DIR, default ~/.dstack-ts/server, or an S3 bucket with DSTACK_SERVER_S3_BUCKET),
// and on first start saves the admin's `main` project to ~/.dstack/config.yml (as upstream does)
// so the CLI works at once.
import { defineCommand } from "citty"
import { CliError, globalArgs, runEffect, usageError } from "../context.ts"
import { print, success } from "../ui.ts"

export interface StartOptions {
  readonly host: string
  readonly port: number
  /** `~/.dstack/server`: state and blobs live under it. */
  readonly serverDir: string
  readonly adminToken: string | undefined
  /** The client config to save the project to; undefined to leave it alone. */
  readonly configPath: string | undefined
  /** Close the server and exit on SIGINT/SIGTERM (`serve`'s handling); false when embedded, e.g. in a test. */
  readonly handleSignals?: boolean
  /** Start on PostgreSQL with blobs on this machine's disk (`--allow-local-blobs`): one server only. */
  readonly allowLocalBlobs?: boolean
  /** The environment the build reads (DSTACK_DATABASE_URL, DSTACK_SERVER_S3_*); default `process.env`. */
  readonly env?: NodeJS.ProcessEnv
  /**
   * Run the SSH proxy upstream's CLI attaches through on this port (`--sshproxy-port`), its host
   * key in `<serverDir>/sshproxy_host_key`; runs answers advertise `sshProxyAddress`
   * (`host[:port]`, default the bound host and this port).
   */
  readonly sshProxyPort?: number | undefined
  readonly sshProxyAddress?: string | undefined
  /**
   * The reverse proxies or load balancers in front of the server (`--trusted-proxies`): a
   * service request from one comes from the client its `X-Forwarded-For` names.
   */
  readonly trustedProxies?: ReadonlyArray<string> | undefined
}

/** `host[:port]` (a bracketed IPv6 host too) of `--sshproxy-address`; undefined port: the one listened on. */
export const parseProxyAddress = (text: string): { readonly hostname: string; readonly port: number | undefined } => {
  const match = /^(\[[^\]]+\]|[^:\[\]]+)(?::(\d+))?$/.exec(text.trim())
  const port = match?.[2] === undefined ? undefined : Number(match[2])
  if (match === null || (port !== undefined && (port < 1 || port > 65535))) {
    throw usageError(`--sshproxy-address: "${text}" is not host or host:port (DSTACK_SERVER_SSHPROXY_ADDRESS)`)
  }
  return { hostname: match[1].replace(/^\[|\]$/g, ""), port }
}

export interface RunningServer {
  readonly url: string
  readonly close: () => Promise<void>
}

/** The message of a BlobStoreError that failed the server's start, if that is what `error` is. */
const blobStoreFailure = async (error: unknown): Promise<string | undefined> => {
  const { Cause, Option, Runtime } = await import("effect")
  // runPromise rejects with a FiberFailure that carries the failure in its cause.
  const failure = Runtime.isFiberFailure(error) ? Option.getOrUndefined(Cause.failureOption(error[Runtime.FiberFailureCauseId])) : error
  return typeof failure === "object" && failure !== null && (failure as { _tag?: unknown })._tag === "BlobStoreError"
    ? String((failure as { message?: unknown }).message)
    : undefined
}

/** Starts the server and listens; prints the URL and, on first start, the admin token. */
export const startServer = async (options: StartOptions): Promise<RunningServer> => {
  const { createServer, serve, ServeError } = await import("@dstack-ts/core")
  const { defaultServerOptions } = await import("../defaultBuild.ts")
  const defaults = defaultServerOptions(options.serverDir, options.adminToken, {
    ...(options.env === undefined ? {} : { env: options.env }),
    allowLocalBlobs: options.allowLocalBlobs === true
  })
  const { join } = await import("node:path")
  const advertised = options.sshProxyAddress === undefined ? undefined : parseProxyAddress(options.sshProxyAddress)
  const withProxies = options.trustedProxies === undefined ? defaults : { ...defaults, services: { ...defaults.services, trustedProxies: options.trustedProxies } }
  const build = options.sshProxyPort === undefined ? withProxies : {
    ...withProxies,
    sshProxy: {
      port: options.sshProxyPort,
      bind: options.host,
      hostKeyFile: join(options.serverDir, "sshproxy_host_key"),
      hostname: advertised?.hostname ?? (options.host === "0.0.0.0" || options.host === "::" ? "localhost" : options.host),
      advertisePort: advertised?.port
    }
  }
  const server = await createServer(build).catch(async (error: unknown) => {
    // A refused store setup (shared state with local blobs, a bucket that cannot be used) is
    // the operator's to fix: one line, no stack.
    const tag = (error as { _tag?: unknown })?._tag
    if (tag === "LocalBlobsError") throw new CliError((error as Error).message)
    if (tag === "TrustedProxiesError") throw new CliError(`--trusted-proxies (DSTACK_SERVER_TRUSTED_PROXIES): ${(error as Error).message}`)
    const blobs = await blobStoreFailure(error)
    if (blobs !== undefined) throw new CliError(`The blob store \`${String((build.blobs as { driver?: unknown }).driver)}\` cannot start: ${blobs}`)
    throw error
  })
  const serving = await serve(server, { hostname: options.host, port: options.port, handleSignals: options.handleSignals ?? false }).catch((error: unknown) => {
    if (error instanceof ServeError && error.code === "EADDRINUSE") throw new CliError(`Port ${options.port} on ${options.host} is already in use (pass --port)`)
    throw error
  })
  const url = serving.url
  const token = server.bootstrap.adminToken ?? options.adminToken
  const project = server.bootstrap.project.projectName
  if (server.bootstrap.adminToken) print(`The admin token is ${server.bootstrap.adminToken}`)
  if (options.configPath !== undefined) {
    const DstackClient = await import("@dstack-ts/client")
    const { ClientConfigFile } = DstackClient
    const config = (await runEffect(ClientConfigFile.loadConfigFile(options.configPath))) ?? { projects: [] }
    // On a restart the admin token is not issued again: keep the saved one, but follow the
    // server to its (possibly new) address.
    const saved = config.projects.find((p) => p.name === project)
    const projectToken = token ?? saved?.token
    if (projectToken !== undefined) {
      const hasDefault = config.projects.some((p) => p.default === true && p.name !== project)
      await runEffect(ClientConfigFile.saveConfigFile(options.configPath, DstackClient.upsertProject(config, { name: project, url, token: projectToken }, !hasDefault)))
      print(`The ${project} project is configured in ${options.configPath}`)
    }
  }
  success(`The server is running at ${url}`)
  if (server.sshProxy !== undefined) {
    const advertised = build.sshProxy!
    const port = advertised.advertisePort ?? server.sshProxy.port
    print(`The SSH proxy listens on port ${server.sshProxy.port}; users trust its host key with this line in ~/.ssh/known_hosts:`)
    print(`${port === 22 ? advertised.hostname : `[${advertised.hostname}]:${port}`} ${server.sshProxy.hostPublicKey}`)
  }
  return { url, close: serving.close }
}

export default defineCommand({
  meta: { name: "server", description: "Start the dstack server" },
  args: {
    host: { type: "string", description: "The address to bind", default: "127.0.0.1", valueHint: "host" },
    port: { type: "string", description: "The port to listen on (0: any free port)", default: "3000", valueHint: "port" },
    token: { type: "string", description: "The admin token (default: DSTACK_SERVER_ADMIN_TOKEN, else a random one printed once)", valueHint: "token" },
    "allow-local-blobs": {
      type: "boolean",
      description: "Start on PostgreSQL (DSTACK_DATABASE_URL) with blobs on this machine's disk: only when no other replica shares the database"
    },
    "sshproxy-port": {
      type: "string",
      description: "Run the SSH proxy upstream's CLI attaches through on this port (default: DSTACK_SERVER_SSHPROXY_PORT; off when neither is set)",
      valueHint: "port"
    },
    "sshproxy-address": {
      type: "string",
      description: "The host[:port] runs answers tell clients to reach the SSH proxy at (default: DSTACK_SERVER_SSHPROXY_ADDRESS, else --host and the proxy's port)",
      valueHint: "host[:port]"
    },
    "trusted-proxies": {
      type: "string",
      description:
        "Comma-separated IPs, CIDR ranges or loopback/linklocal/uniquelocal of load balancers in front of the server: a service request from one comes from the client its X-Forwarded-For names, for rate_limits and X-Real-IP (default: DSTACK_SERVER_TRUSTED_PROXIES; none)",
      valueHint: "addresses"
    },
    ...globalArgs
  },
  run: async ({ args }) => {
    const port = Number(args.port)
    if (!/^\d+$/.test(args.port) || port > 65535) throw usageError(`--port: "${args.port}" is not a port number (0–65535)`)
    const proxyPortText = args["sshproxy-port"] ?? (process.env.DSTACK_SERVER_SSHPROXY_PORT || undefined)
    const proxyPort = proxyPortText === undefined ? undefined : Number(proxyPortText)
    if (proxyPortText !== undefined && (!/^\d+$/.test(proxyPortText) || proxyPort! > 65535)) {
      throw usageError(`--sshproxy-port: "${proxyPortText}" is not a port number (0–65535)`)
    }
    const proxyAddress = args["sshproxy-address"] ?? (process.env.DSTACK_SERVER_SSHPROXY_ADDRESS || undefined)
    if (proxyAddress !== undefined) {
      if (proxyPort === undefined) throw usageError("--sshproxy-address (DSTACK_SERVER_SSHPROXY_ADDRESS) needs --sshproxy-port (DSTACK_SERVER_SSHPROXY_PORT): the proxy is off without it")
      parseProxyAddress(proxyAddress)
    }
    const trustedProxies = args["trusted-proxies"] ?? (process.env.DSTACK_SERVER_TRUSTED_PROXIES || undefined)
    const { ClientConfigFile } = await import("@dstack-ts/client")
    const { defaultServerDir } = await import("../defaultBuild.ts")
    const configPath = ClientConfigFile.defaultConfigPath()
    await startServer({
      host: args.host,
      port,
      serverDir: defaultServerDir(),
      adminToken: args.token ?? (process.env.DSTACK_SERVER_ADMIN_TOKEN || undefined),
      configPath,
      handleSignals: true,
      allowLocalBlobs: args["allow-local-blobs"] === true,
      sshProxyPort: proxyPort,
      sshProxyAddress: proxyAddress,
      trustedProxies: trustedProxies === undefined ? undefined : trustedProxies.split(",").map((t) => t.trim()).filter((t) => t !== "")
    })
    // Serving until SIGINT/SIGTERM, on which serve() closes the server and exits.
    await new Promise<never>(() => {})
  }
})
