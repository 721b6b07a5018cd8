/**
 * The configurations of `.dstack.yml` files, discriminated by `type`: `task`, `service`,
 * `dev-environment` and `fleet`. YAML keys are upstream snake_case; TypeScript fields are
 * camelCase. Older key names (`retry_policy`, `termination_idle_time`) are read into the newer
 * fields, and cross-field rules (python/nvcc vs image, replicas range vs scaling) are checked.
 */
import { Either, ParseResult, Schema } from "effect"
import { BackendType } from "./BackendType.ts"
import { DurationOrOff } from "./Duration.ts"
import { Env } from "./Env.ts"
import { isPlainObject, oneOf, scalar, show } from "./Grammar.ts"
import { CreationPolicy, SpotPolicy, TerminationPolicy } from "./Policies.ts"
import { PortMapping } from "./PortMapping.ts"
import { IntRange, type Range } from "./Range.ts"
import { nullAsAbsent } from "./internal/nullAsAbsent.ts"
import { RegistryAuth } from "./RegistryAuth.ts"
import { DEFAULT_RESOURCES, ResourcesSpec } from "./Resources.ts"
import { fromLegacyRetryPolicy, LegacyRetryPolicy, RetryPolicy } from "./RetryPolicy.ts"
import { Probe, RateLimit, Scaling } from "./Scaling.ts"
import { VolumeMount } from "./Volume.ts"

// ---------------------------------------------------------------------------------------------
// Field helpers

type Described = { readonly description: string }

/** An optional field, absent when not written, with YAML key `key` when it differs. */
const opt = <A, I, R>(schema: Schema.Schema<A, I, R>, doc: Described, key?: string) => {
  const ps = Schema.optionalWith(schema, { exact: true }).annotations(doc)
  return key === undefined ? ps : ps.pipe(Schema.fromKey(key))
}

/** An optional field with a default. */
const withDefault = <A, I, R>(schema: Schema.Schema<A, I, R>, value: () => A, doc: Described, key?: string) => {
  const ps = Schema.optionalWith(schema, { default: value }).annotations(doc)
  return key === undefined ? ps : ps.pipe(Schema.fromKey(key))
}

const StringList = Schema.Array(Schema.String)

// ---------------------------------------------------------------------------------------------
// Scalars specific to configurations

/** Python versions that images are provided for. */
export const PYTHON_VERSIONS = ["3.9", "3.10", "3.11", "3.12", "3.13"] as const
export type PythonVersion = (typeof PYTHON_VERSIONS)[number]

const parsePython = (input: unknown): Either.Either<PythonVersion, string> => {
  // YAML reads `python: 3.10` as the number 3.1.
  const s = typeof input === "number" ? (input === 3.1 ? "3.10" : String(input)) : input
  return typeof s === "string" && (PYTHON_VERSIONS as ReadonlyArray<string>).includes(s.trim())
    ? Either.right(s.trim() as PythonVersion)
    : Either.left(`expected a Python version, one of ${PYTHON_VERSIONS.join(", ")}, got ${show(input)}`)
}

export const PythonVersion: Schema.Schema<PythonVersion, string | number> = scalar(
  Schema.Literal(...PYTHON_VERSIONS),
  parsePython,
  (v) => v
).annotations({ identifier: "PythonVersion" }) as never

/** Run names: lowercase letters, digits and `-`, starting with a letter, 2 to 41 characters. */
export const RunName = Schema.String.pipe(
  Schema.filter(
    (s) =>
      /^[a-z][a-z0-9-]{1,40}$/.test(s) ||
      `expected a name of 2–41 lowercase letters, digits and -, starting with a letter, got ${show(s)}`
  )
).annotations({ identifier: "RunName" })

const MaxPrice = Schema.Number.pipe(
  Schema.filter((n) => n > 0 || `expected a positive price in dollars per hour, got ${n}`)
)

const PositiveInt = (what: string) =>
  Schema.Number.pipe(
    Schema.filter((n) => (Number.isInteger(n) && n >= 1) || `expected ${what} (a whole number ≥ 1), got ${n}`)
  )

// ---------------------------------------------------------------------------------------------
// Fields shared by the run configurations (task, service, dev-environment)

const runFields = {
  name: opt(RunName, { description: "The run name. A random name is picked when omitted." }),
  image: opt(Schema.String, { description: "The Docker image to run. Without it the commands run as processes on the host, under bash." }),
  user: opt(Schema.String, { description: "The user inside the container, `user[:group]` by name or id (`ubuntu`, `1000:1000`). Defaults to the image's user. Needs `image`." }),
  privileged: opt(Schema.Boolean, { description: "Run the container in privileged mode. Needs `image`." }),
  entrypoint: opt(Schema.String, { description: "Overrides the image's entrypoint. Needs `image`." }),
  workingDir: opt(Schema.String, { description: "The working directory, relative to the repo directory. Defaults to `.`." }, "working_dir"),
  registryAuth: opt(RegistryAuth, { description: "Credentials for pulling a private image: `{username, password}`. Needs `image`." }, "registry_auth"),
  python: opt(PythonVersion, { description: `Without \`image\`: the Python version the host must have (${PYTHON_VERSIONS.join(", ")}); the job fails with a clear message when it lacks it. Mutually exclusive with \`image\`.` }),
  nvcc: opt(Schema.Boolean, { description: "Without `image`: the host must have the NVIDIA CUDA compiler (nvcc). Mutually exclusive with `image`." }),
  env: opt(Env, { description: "Environment variables: a map or a list of `NAME=value`. `${{ secrets.NAME }}` is replaced by the project secret on the runner. A bare `NAME` takes its value from the environment `dstack apply` runs in (an error when it is not set there)." }),
  resources: withDefault(ResourcesSpec, () => DEFAULT_RESOURCES, { description: "The resources needed (`cpu`, `memory`, `shm_size`, `gpu`, `disk`)." }),
  volumes: opt(Schema.Array(VolumeMount), { description: "Directories of the instance to mount into the container: `/instance/dir:/path` or `{instance_path, path}` (needs `image`). Network volumes (`name:/path`, `{name, path}`) only with `backends: [kubernetes]`, as the PersistentVolumeClaim of that name; refused elsewhere." }),
  backends: opt(Schema.Array(BackendType), { description: "Only consider these backends (`[aws, gcp]`, `[local]`, `[remote]`)." }),
  fleets: opt(StringList, { description: "Run only on instances of these fleets (`[my-ssh-fleet]`): nothing new is provisioned from backends." }),
  regions: opt(StringList, { description: "Only consider these regions (`[eu-west-1, us-west4]`)." }),
  instanceTypes: opt(StringList, { description: "Only consider these instance types (`[p3.8xlarge, n1-standard-4]`)." }, "instance_types"),
  reservation: opt(Schema.String, { description: "An existing capacity reservation to use. Not supported yet (refused)." }),
  spotPolicy: opt(SpotPolicy, { description: "`spot`, `on-demand` or `auto`. Defaults to `on-demand`." }, "spot_policy"),
  retry: opt(RetryPolicy, { description: "Resubmit on failure: `true`, `false` or `{on_events: [no-capacity, interruption, error], duration: 1h}`. Defaults to `false`." }),
  maxDuration: opt(DurationOrOff, { description: "Stop the run after this long (`2h`, `1d`), or `off`. Defaults to `off`." }, "max_duration"),
  maxPrice: opt(MaxPrice, { description: "The highest instance price to accept, in dollars per hour." }, "max_price"),
  idleDuration: opt(DurationOrOff, { description: "Terminate the instance after it has been idle this long (`5m`, `1h`), or `off`. Defaults to `5m`. Also read from the older key `termination_idle_time`." }, "idle_duration"),
  creationPolicy: opt(CreationPolicy, { description: "`reuse-or-create` (the default): take an idle instance that fits, else provision one. `reuse` is not supported yet (refused)." }, "creation_policy"),
  terminationPolicy: opt(TerminationPolicy, { description: "`destroy-after-idle` (the default): end the instance after `idle_duration`. `dont-destroy` is not supported yet (refused): write `idle_duration: off`." }, "termination_policy"),
  poolName: opt(Schema.String, { description: "The pool (older name of a fleet) to take instances from. Not supported yet (refused)." }, "pool_name"),
  instanceName: opt(Schema.String, { description: "The name of the instance to provision. Not supported yet (refused)." }, "instance_name")
}

/** Keys accepted in YAML under their older names and moved onto the newer fields. */
const legacyFields = {
  retryPolicy: opt(LegacyRetryPolicy, { description: "Deprecated: use `retry`. `{retry: bool, limit: duration}`." }, "retry_policy"),
  terminationIdleTime: opt(DurationOrOff, { description: "Deprecated: use `idle_duration`." }, "termination_idle_time")
}

interface LegacyInput {
  readonly retryPolicy?: LegacyRetryPolicy
  readonly terminationIdleTime?: number | "off"
  readonly retry?: RetryPolicy
  readonly idleDuration?: number | "off"
}

type Issue = { readonly path: ReadonlyArray<string>; readonly message: string }

const runRules = (c: { image?: string; python?: string; nvcc?: boolean }): Array<Issue> => {
  const issues: Array<Issue> = []
  if (c.image !== undefined && c.python !== undefined) {
    issues.push({ path: ["python"], message: "python and image are mutually exclusive: install Python in your image, or drop image" })
  }
  if (c.image !== undefined && c.nvcc !== undefined) {
    issues.push({ path: ["nvcc"], message: "nvcc and image are mutually exclusive: install the CUDA compiler in your image, or drop image" })
  }
  return issues
}

/**
 * Builds a configuration schema: `input` holds every YAML key (older names included), `output`
 * the normalised fields. Decoding moves the older keys onto the newer ones and runs `rules`.
 */
const configuration = <F extends Schema.Struct.Fields, O extends Schema.Struct.Fields>(
  identifier: string,
  description: string,
  fields: F,
  legacy: O,
  rules: (c: Schema.Struct.Type<F>) => Array<Issue>
) => {
  const input = Schema.Struct({ ...fields, ...legacy })
  const output = Schema.typeSchema(Schema.Struct(fields)).pipe(
    Schema.filter((c) => {
      const issues = rules(c as Schema.Struct.Type<F>)
      return issues.length === 0 ? undefined : issues
    })
  )
  return Schema.transformOrFail(input, output, {
    strict: false,
    decode: (raw, _, ast) => {
      const { retryPolicy, terminationIdleTime, ...rest } = raw as LegacyInput & Record<string, unknown>
      const conflicts: Array<ParseResult.ParseIssue> = []
      const out: Record<string, unknown> = { ...rest }
      if (retryPolicy !== undefined) {
        if (rest.retry !== undefined) {
          conflicts.push(new ParseResult.Pointer("retry_policy", raw, new ParseResult.Type(ast, retryPolicy, "retry_policy is the older form of retry: give one of them, not both")))
        } else out.retry = fromLegacyRetryPolicy(retryPolicy)
      }
      if (terminationIdleTime !== undefined) {
        if (rest.idleDuration !== undefined) {
          conflicts.push(new ParseResult.Pointer("termination_idle_time", raw, new ParseResult.Type(ast, terminationIdleTime, "termination_idle_time is the older name of idle_duration: give one of them, not both")))
        } else out.idleDuration = terminationIdleTime
      }
      if (conflicts.length > 0) {
        return ParseResult.fail(new ParseResult.Composite(ast, raw, conflicts as [ParseResult.ParseIssue, ...Array<ParseResult.ParseIssue>]))
      }
      return ParseResult.succeed(out)
    },
    encode: (c) => ParseResult.succeed(c)
  }).annotations({ identifier, description })
}

// ---------------------------------------------------------------------------------------------
// Task

const taskFields = {
  type: Schema.Literal("task").annotations({ description: "`task`: commands that run to completion (training, batch jobs)." }),
  ...runFields,
  nodes: withDefault(PositiveInt("a number of nodes"), () => 1, { description: "The number of nodes for a distributed task. Defaults to `1`. More than 1 is placed all or nothing on a `placement: cluster` fleet, a Slurm allocation or Kubernetes pods; every node gets the `DSTACK_NODE_RANK`, `DSTACK_NODES_IPS`… cluster environment." }),
  commands: opt(StringList, { description: "The shell commands to run, in order, under bash." }),
  ports: opt(Schema.Array(PortMapping), { description: "Ports to forward when attached: `8080` or `\"8080:80\"` (`\"*:80\"`, any free local port, is not supported yet)." })
}

/** A task: commands that run to completion. */
export const TaskConfiguration = configuration(
  "TaskConfiguration",
  "A task runs commands to completion, on one node or on several (`nodes`).",
  taskFields,
  legacyFields,
  runRules
)
export type TaskConfiguration = typeof TaskConfiguration.Type

// ---------------------------------------------------------------------------------------------
// Service

/** The OpenAI-compatible model a service exposes. */
export const ServiceModel = Schema.Struct({
  type: Schema.optionalWith(oneOf("chat"), { default: () => "chat" as const }).annotations({
    description: "The model type. Only `chat` is supported."
  }),
  format: Schema.optionalWith(oneOf("openai"), { default: () => "openai" as const }).annotations({
    description: "The API format. Only `openai` is supported."
  }),
  name: Schema.String.annotations({ description: "The model name clients ask for." }),
  prefix: Schema.optionalWith(Schema.String, { default: () => "/v1" }).annotations({
    description: "The path prefix of the API in the service. Defaults to `/v1`."
  })
}).annotations({ identifier: "ServiceModel" })
export type ServiceModel = typeof ServiceModel.Type

const ServiceModelOrName: Schema.Schema<ServiceModel, typeof ServiceModel.Encoded | string> = Schema.transformOrFail(
  Schema.Unknown,
  Schema.typeSchema(ServiceModel),
  {
    strict: true,
    decode: (u, options, ast) =>
      typeof u === "string"
        ? ParseResult.succeed({ type: "chat" as const, format: "openai" as const, name: u, prefix: "/v1" })
        : isPlainObject(u)
          ? ParseResult.decodeUnknown(nullAsAbsent(ServiceModel))(u, options)
          : ParseResult.fail(new ParseResult.Type(ast, u, `expected a model name or {format: openai, name, prefix}, got ${show(u)}`)),
    encode: (m, options) => ParseResult.encode(ServiceModel)(m, options)
  }
).annotations({ identifier: "ServiceModelOrName" }) as never

const serviceFields = {
  type: Schema.Literal("service").annotations({ description: "`service`: a long-running app listening on `port`, served through the server's proxy at `/proxy/services/{project}/{run}/`, in a number of replicas or a range that follows its traffic." }),
  ...runFields,
  port: Schema.propertySignature(PortMapping).annotations({ description: "The port the app listens on (`8000`). Required. A mapping (`\"8080:8000\"`) is not supported (refused): the server's proxy is where the service is served." }),
  commands: opt(StringList, { description: "The shell commands that start the service." }),
  gateway: opt(Schema.Union(Schema.String, Schema.Boolean), { description: "The gateway to publish through, `false` for none. The server is the gateway here: a name or `true` is refused; `false` is accepted." }),
  stripPrefix: withDefault(Schema.Boolean, () => true, { description: "Strip `/proxy/services/{project}/{run}` from the path before the request reaches a replica. Defaults to `true`." }, "strip_prefix"),
  model: opt(ServiceModelOrName, { description: "Expose the service as an OpenAI-compatible model: a model name, or `{type: chat, format: openai, name, prefix: /v1}`; it is then served at `/proxy/models/{project}/v1/`." }),
  https: withDefault(Schema.Boolean, () => true, { description: "Serve over HTTPS when behind a gateway. Defaults to `true`. The server is the gateway here: `false` is refused." }),
  auth: withDefault(Schema.Boolean, () => true, { description: "Require a user token (a member of the project) from callers of the proxy. Defaults to `true`; `false` lets anyone call." }),
  replicas: withDefault(IntRange, (): Range => ({ min: 1, max: 1 }), { description: "The number of replicas (`2`), or a range (`0..4`) that follows requests per second by `scaling`. Defaults to `1`." }),
  scaling: opt(Scaling, { description: "Autoscaling rules: `{metric: rps, target, window, scale_up_delay, scale_down_delay}`. Required when `replicas` is a range." }),
  rateLimits: opt(Schema.Array(RateLimit), { description: "Rate limits per client IP: `[{prefix: /, rps, burst}]`; the longest matching prefix applies." }, "rate_limits"),
  probes: opt(Schema.Array(Probe), { description: "HTTP probes a replica must pass before it serves requests: `[{type: http, url, method, headers, body, timeout, interval, ready_after, until_ready}]`." })
}

const serviceRules = (c: Schema.Struct.Type<typeof serviceFields>): Array<Issue> => {
  const issues = runRules(c)
  if (c.replicas.min !== c.replicas.max && c.scaling === undefined) {
    issues.push({ path: ["replicas"], message: "a range of replicas needs scaling rules: add scaling: {metric: rps, target: N}" })
  }
  if (c.replicas.min === c.replicas.max && c.scaling !== undefined) {
    issues.push({ path: ["scaling"], message: "scaling needs a range of replicas: write replicas: MIN..MAX" })
  }
  const prefixes = new Set<string>()
  for (const [i, limit] of (c.rateLimits ?? []).entries()) {
    if (prefixes.has(limit.prefix)) issues.push({ path: ["rate_limits", String(i), "prefix"], message: `the prefix ${limit.prefix} has a rate limit already; each prefix may have one` })
    prefixes.add(limit.prefix)
  }
  return issues
}

/** A service: a long-running app with a port and replicas. */
export const ServiceConfiguration = configuration(
  "ServiceConfiguration",
  "A service runs a long-running app on `port` in replicas served through the server's proxy; a range of replicas follows its requests per second.",
  serviceFields,
  legacyFields,
  serviceRules
)
export type ServiceConfiguration = typeof ServiceConfiguration.Type

// ---------------------------------------------------------------------------------------------
// Dev environment

const devEnvironmentFields = {
  type: Schema.Literal("dev-environment").annotations({ description: "`dev-environment`: a machine that runs `init` and stays up until stopped, reached with `ssh RUN` and an IDE's remote-SSH through the server's SSH proxy." }),
  ...runFields,
  ide: opt(oneOf("vscode", "cursor"), { description: "The IDE to connect: `vscode` or `cursor`. `dstack apply` and `dstack attach` print its remote-SSH link (`vscode://vscode-remote/ssh-remote+RUN/<working dir>`), which goes through the `ssh RUN` alias (needs the server's SSH proxy)." }),
  version: opt(Schema.String, { description: "The IDE server version to install. Not supported yet (refused): the IDE installs its own server over SSH." }),
  init: opt(StringList, { description: "Shell commands to run once the environment starts, before it waits." }),
  inactivityDuration: opt(DurationOrOff, { description: "Stop the environment after this long (`30m`, `2h`) with no SSH connection through the server's SSH proxy (`ssh RUN`, an IDE, `ssh -L`), or `off`. Defaults to `off`." }, "inactivity_duration"),
  ports: opt(Schema.Array(PortMapping), { description: "Ports to forward when attached." })
}

/** A dev environment: a machine that runs `init` and stays up until stopped. */
export const DevEnvironmentConfiguration = configuration(
  "DevEnvironmentConfiguration",
  "A dev environment provisions a machine, runs `init` and stays up until stopped (or `inactivity_duration` without an SSH connection); `ssh RUN` and the IDE's remote-SSH reach it through the server's SSH proxy.",
  devEnvironmentFields,
  legacyFields,
  runRules
)
export type DevEnvironmentConfiguration = typeof DevEnvironmentConfiguration.Type

// ---------------------------------------------------------------------------------------------
// Fleet

/** A key pair the client read from `identity_file` and sends along (upstream `ssh_key`); the server never answers the private part. */
export const SshKey = Schema.Struct({
  public: Schema.String.annotations({ description: "The public key (OpenSSH line)." }),
  private: opt(Schema.String, { description: "The private key (OpenSSH or PEM text)." })
}).annotations({ identifier: "SshKey" })
export type SshKey = typeof SshKey.Type

const SshPort = Schema.Number.pipe(
  Schema.filter((n) => (Number.isInteger(n) && n >= 1 && n <= 65535) || `expected a port number (1–65535), got ${n}`)
)

const Blocks = Schema.Union(
  Schema.Literal("auto"),
  Schema.Number.pipe(Schema.filter((n) => (Number.isInteger(n) && n >= 1) || `expected auto or a whole number ≥ 1, got ${n}`))
)

const isPrivateIpv4 = (ip: string): boolean => {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip)
  if (m === null || m.slice(1).some((x) => Number(x) > 255)) return false
  const [a, b] = [Number(m[1]), Number(m[2])]
  return a === 10 || a === 127 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 169 && b === 254) || (a === 100 && b >= 64 && b <= 127)
}

const PrivateIp = Schema.String.pipe(
  Schema.filter((s) => isPrivateIpv4(s) || `expected a private IPv4 address (10.x, 172.16–31.x, 192.168.x), got ${show(s)}`)
)

/** `<ip>/<bits>` of a private IPv4 network. */
export const PrivateNetwork = Schema.String.pipe(
  Schema.filter((s) => {
    const m = /^([0-9.]+)\/(\d{1,2})$/.exec(s)
    return (m !== null && isPrivateIpv4(m[1]) && Number(m[2]) <= 32) || `expected a private network as <ip>/<netmask bits> (10.0.0.0/24), got ${show(s)}`
  })
)

export const SshProxyJump = Schema.Struct({
  hostname: Schema.String.annotations({ description: "The jump host." }),
  port: opt(SshPort, { description: "Its SSH port. Defaults to 22." }),
  user: opt(Schema.String, { description: "The user on the jump host. Defaults to the host's user." }),
  identityFile: opt(Schema.String, { description: "The private key for the jump host (read by the CLI, sent as `ssh_key`). Defaults to the host's key." }, "identity_file"),
  sshKey: opt(SshKey, { description: "The key pair itself, as the CLI sends it after reading `identity_file`." }, "ssh_key")
}).annotations({ identifier: "SshProxyJump" })
export type SshProxyJump = typeof SshProxyJump.Type

/** One host of an SSH fleet. */
export const SshHost = Schema.Struct({
  hostname: Schema.String.annotations({ description: "The host name or IP address." }),
  port: opt(SshPort, { description: "The SSH port. Defaults to `ssh_config.port`, else 22." }),
  user: opt(Schema.String, { description: "The SSH user. Defaults to `ssh_config.user`." }),
  identityFile: opt(Schema.String, { description: "The private key. Defaults to `ssh_config.identity_file`." }, "identity_file"),
  sshKey: opt(SshKey, { description: "The key pair itself, as the CLI sends it after reading `identity_file`." }, "ssh_key"),
  proxyJump: opt(SshProxyJump, { description: "A jump host for this host: `{hostname, port, user, identity_file}`." }, "proxy_jump"),
  internalIp: opt(PrivateIp, { description: "The private address other hosts of the fleet reach this one on. Defaults to the host's address in `network`, else the address it is dialled at." }, "internal_ip"),
  blocks: opt(Blocks, { description: "Split this host into blocks. Only `1` (the default) is supported: other values are refused." })
}).annotations({ identifier: "SshHost" })
export type SshHost = typeof SshHost.Type

const SshHostOrName: Schema.Schema<SshHost, typeof SshHost.Encoded | string> = Schema.transformOrFail(Schema.Unknown, Schema.typeSchema(SshHost), {
  strict: true,
  decode: (u, options, ast) =>
    typeof u === "string" && u.trim() !== ""
      ? ParseResult.succeed({ hostname: u.trim() })
      : isPlainObject(u)
        ? ParseResult.decodeUnknown(nullAsAbsent(SshHost))(u, options)
        : ParseResult.fail(new ParseResult.Type(ast, u, `expected a host name or {hostname, port, user, identity_file}, got ${show(u)}`)),
  encode: (h, options) => ParseResult.encode(SshHost)(h, options)
}).annotations({ identifier: "SshHostOrName" }) as never

/** How to reach the hosts of an SSH fleet. */
export const SshConfig = Schema.Struct({
  user: opt(Schema.String, { description: "The SSH user for every host." }),
  port: opt(SshPort, { description: "The SSH port for every host. Defaults to 22." }),
  identityFile: opt(Schema.String, { description: "The private key for every host (read by the CLI, sent as `ssh_key`)." }, "identity_file"),
  sshKey: opt(SshKey, { description: "The key pair itself, as the CLI sends it after reading `identity_file`." }, "ssh_key"),
  proxyJump: opt(SshProxyJump, { description: "A jump host for every host: `{hostname, port, user, identity_file}`." }, "proxy_jump"),
  hosts: Schema.Array(SshHostOrName).pipe(Schema.filter((hosts) => hosts.length > 0 || "give at least one host")).annotations({ description: "The hosts: names/addresses or `{hostname, port, user, identity_file, proxy_jump, internal_ip}`." }),
  network: opt(PrivateNetwork, { description: "The private network (`10.0.0.0/24`) the hosts of a cluster reach each other on: each host's address for the others is its `internal_ip`, else the address the server dials when it is in this network; a host with neither fails provisioning." })
}).annotations({ identifier: "SshConfig" })
export type SshConfig = typeof SshConfig.Type

const fleetFields = {
  type: Schema.Literal("fleet").annotations({ description: "`fleet`: a set of instances, provisioned from backends or given as SSH hosts." }),
  name: opt(RunName, { description: "The fleet name." }),
  env: opt(Env, { description: "Environment variables for the fleet's hosts." }),
  nodes: opt(IntRange, { description: "The number of instances (`2`) or a range (`1..4`) for a cloud fleet." }),
  placement: opt(oneOf("any", "cluster"), { description: "`cluster`: the hosts reach each other and take multi-node tasks (`nodes: N`), placed all or nothing; `any` does not. Defaults to `any`." }),
  blocks: opt(Blocks, { description: "Split each instance into blocks. Only `1` (the default) is supported: other values are refused." }),
  resources: opt(ResourcesSpec, { description: "The resources of each instance of a cloud fleet." }),
  backends: opt(Schema.Array(BackendType), { description: "Only consider these backends." }),
  regions: opt(StringList, { description: "Only consider these regions." }),
  instanceTypes: opt(StringList, { description: "Only consider these instance types." }, "instance_types"),
  reservation: opt(Schema.String, { description: "An existing capacity reservation to use. Not supported yet (refused)." }),
  spotPolicy: opt(SpotPolicy, { description: "`spot`, `on-demand` or `auto`. Defaults to `on-demand`." }, "spot_policy"),
  retry: opt(RetryPolicy, { description: "Retry provisioning: `true`, `false` or `{on_events, duration}`." }),
  maxPrice: opt(MaxPrice, { description: "The highest instance price to accept, in dollars per hour." }, "max_price"),
  idleDuration: opt(DurationOrOff, { description: "Terminate instances idle this long (`3d`), or `off`. Defaults to `3d`." }, "idle_duration"),
  terminationPolicy: opt(TerminationPolicy, { description: "`dont-destroy` or `destroy-after-idle`." }, "termination_policy"),
  sshConfig: opt(SshConfig, { description: "Use your own hosts over SSH: `{user, port, identity_file, proxy_jump, hosts}`." }, "ssh_config")
}

const fleetRules = (c: Schema.Struct.Type<typeof fleetFields>): Array<Issue> => {
  if (c.nodes !== undefined && c.sshConfig !== undefined) {
    return [{ path: ["ssh_config"], message: "nodes and ssh_config cannot be used together: a fleet is either provisioned (nodes) or your own hosts (ssh_config)" }]
  }
  if (c.nodes === undefined && c.sshConfig === undefined) {
    return [{ path: [], message: "a fleet needs nodes (instances from backends) or ssh_config (your own hosts)" }]
  }
  return []
}

/** A fleet: instances provisioned from backends (`nodes`) or the user's hosts (`ssh_config`). */
export const FleetConfiguration = configuration(
  "FleetConfiguration",
  "A fleet is a set of instances: provisioned from backends (`nodes`), or your own hosts over SSH (`ssh_config`).",
  fleetFields,
  { terminationIdleTime: legacyFields.terminationIdleTime, retryPolicy: legacyFields.retryPolicy },
  fleetRules
)
export type FleetConfiguration = typeof FleetConfiguration.Type

// ---------------------------------------------------------------------------------------------
// Unions

/** The configuration types and their schemas, by the value of `type`. */
export const CONFIGURATION_SCHEMAS = {
  task: TaskConfiguration,
  service: ServiceConfiguration,
  "dev-environment": DevEnvironmentConfiguration,
  fleet: FleetConfiguration
} as const
export type ConfigurationType = keyof typeof CONFIGURATION_SCHEMAS

const RUN_TYPES = ["task", "service", "dev-environment"] as const

const dispatch = <T extends ConfigurationType>(types: ReadonlyArray<T>, identifier: string) => {
  const members = types.map((t) => Schema.typeSchema(CONFIGURATION_SCHEMAS[t] as unknown as Schema.Schema<unknown, unknown>))
  type A = Schema.Schema.Type<(typeof CONFIGURATION_SCHEMAS)[T]>
  type I = Schema.Schema.Encoded<(typeof CONFIGURATION_SCHEMAS)[T]>
  return Schema.transformOrFail(Schema.Unknown, Schema.Union(...members), {
    strict: false,
    decode: (u, options, ast) => {
      const type = isPlainObject(u) ? u.type : undefined
      if (!isPlainObject(u)) {
        return ParseResult.fail(new ParseResult.Type(ast, u, `expected a configuration (a map with a type), got ${show(u)}`))
      }
      if (!(types as ReadonlyArray<unknown>).includes(type)) {
        const message = type === undefined
          ? `type is missing: add type: ${types.join(" | ")}`
          : `expected one of ${types.join(", ")}, got ${show(type)}`
        return ParseResult.fail(new ParseResult.Pointer("type", u, new ParseResult.Type(ast, type, message)))
      }
      // An empty key (`image:` in YAML, `"image": null` from upstream's client) is an unset one.
      return ParseResult.decodeUnknown(nullAsAbsent(CONFIGURATION_SCHEMAS[type as T] as unknown as Schema.Schema<unknown, unknown>))(u, options)
    },
    encode: (c, options) =>
      ParseResult.encode(CONFIGURATION_SCHEMAS[(c as unknown as { type: T }).type] as unknown as Schema.Schema<unknown, unknown>)(c, options)
  }).annotations({ identifier }) as unknown as Schema.Schema<A, I>
}

/** A run configuration: task, service or dev-environment. */
export const AnyRunConfiguration = dispatch(RUN_TYPES, "AnyRunConfiguration")
export type AnyRunConfiguration = TaskConfiguration | ServiceConfiguration | DevEnvironmentConfiguration

/** Any configuration a `.dstack.yml` may hold. */
export const AnyConfiguration = dispatch(["task", "service", "dev-environment", "fleet"], "AnyConfiguration")
export type AnyConfiguration = AnyRunConfiguration | FleetConfiguration

/** Whether a configuration describes a run (rather than a fleet). */
export const isRunConfiguration = (c: AnyConfiguration): c is AnyRunConfiguration => c.type !== "fleet"
