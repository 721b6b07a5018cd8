/**
 * The configuration keys that the schemas accept but that nothing in this build carries out yet
 * (no engine step, runner, executor or backend reads them), and the check that refuses them when
 * a run is planned or submitted, naming each key by its YAML path and saying what brings it.
 * Values that behave exactly as the key's absence (`replicas: 2`, `auth` left at its default,
 * `creation_policy: reuse-or-create`) are accepted.
 */
import { Effect, Schema } from "effect"
import type { AnyConfiguration, ConfigurationType } from "../domain/Configuration.ts"
import { isInstanceMount } from "../domain/Volume.ts"

/** One refused key: its YAML path (`["resources", "gpu", "compute_capability"]`) and why. */
export interface UnsupportedKey {
  readonly path: ReadonlyArray<string | number>
  /** A whole sentence naming the key, e.g. "`scaling` is not supported yet: …". */
  readonly message: string
}

/** The roadmap items that bring refused keys (named in messages and in docs/configuration.md). */
export const ROADMAP = {
  fleets: "SSH fleets, attach and multi-node",
  clouds: "clouds and an offers catalog"
} as const
export type RoadmapItem = keyof typeof ROADMAP

/** A rule: which configurations it concerns, what it refuses (for the docs), and the check. */
export interface UnsupportedRule {
  /** The YAML path of the key as the docs write it: `gateway`, `resources.gpu.compute_capability`. */
  readonly key: string
  readonly types: ReadonlyArray<ConfigurationType>
  /** The values refused, in words for the docs (`any value`, `false`, `without image`). */
  readonly refused: string
  /** The roadmap item that brings it. */
  readonly comesWith?: RoadmapItem
  /** What works today instead, in words for the docs (`set \`image\``). */
  readonly instead?: string
  readonly find: (configuration: AnyConfiguration) => ReadonlyArray<UnsupportedKey>
}

const RUN_TYPES: ReadonlyArray<ConfigurationType> = ["task", "service", "dev-environment"]

/** A path as the YAML reads (`env.TOKEN`, `commands[2]`), in backticks. */
const code = (path: ReadonlyArray<string | number>) =>
  `\`${path.map((k, i) => (typeof k === "number" ? `[${k}]` : i === 0 ? k : `.${k}`)).join("")}\``
const notYet = (subject: string, why: string, item?: RoadmapItem) =>
  `${subject} is not supported yet: ${why}${item === undefined ? "" : `; it comes with ${ROADMAP[item]} on the roadmap`}`
const one = (path: ReadonlyArray<string | number>, message: string): ReadonlyArray<UnsupportedKey> => [{ path, message }]
const none: ReadonlyArray<UnsupportedKey> = []

const isRun = (c: AnyConfiguration): c is Exclude<AnyConfiguration, { type: "fleet" }> => c.type !== "fleet"

/** A key of a run configuration refused whenever it is given. */
const anyValue = (
  key: string,
  types: ReadonlyArray<ConfigurationType>,
  get: (c: AnyConfiguration) => unknown,
  why: string,
  comesWith?: RoadmapItem
): UnsupportedRule => ({
  key,
  types,
  refused: "any value",
  ...(comesWith === undefined ? {} : { comesWith }),
  find: (c) => (types.includes(c.type) && get(c) !== undefined ? one(key.split("."), notYet(`\`${key}\``, why, comesWith)) : none)
})

/** A container-only key given without `image`: the process executor has nothing to apply it to. */
const containerOnly = (key: string, given: (c: Exclude<AnyConfiguration, { type: "fleet" }>) => boolean, what: string): UnsupportedRule => ({
  key,
  types: RUN_TYPES,
  refused: "without `image`",
  instead: "set `image`",
  find: (c) =>
    isRun(c) && c.image === undefined && given(c)
      ? one(key.split("."), `\`${key}\` needs \`image\`: ${what} only in a container, and without an image the job runs as processes on the host; set \`image\`, or drop \`${key}\``)
      : none
})

const SECRET_REFERENCE = /\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}/

/** YAML key of a decoded field (`registryAuth` → `registry_auth`); names under `env` are the user's. */
const yamlKey = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)

/** Every string in the configuration that refers to a secret, with its YAML path. */
const secretReferences = (value: unknown, path: ReadonlyArray<string | number>, insideEnv: boolean): Array<{ path: ReadonlyArray<string | number>; name: string }> => {
  if (typeof value === "string") {
    const m = SECRET_REFERENCE.exec(value)
    return m === null ? [] : [{ path, name: m[1] }]
  }
  if (Array.isArray(value)) return value.flatMap((v, i) => secretReferences(v, [...path, i], insideEnv))
  if (typeof value === "object" && value !== null) {
    return Object.entries(value).flatMap(([k, v]) =>
      secretReferences(v, [...path, insideEnv ? k : yamlKey(k)], path.length === 0 && k === "env"))
  }
  return []
}

/**
 * True when the run may land only on the kubernetes backend, the one that mounts network
 * volumes (as PersistentVolumeClaims); on any other backend a network volume would be ignored.
 */
const onlyKubernetes = (c: Exclude<AnyConfiguration, { type: "fleet" }>) =>
  c.backends !== undefined && c.backends.length > 0 && c.backends.every((b) => b === "kubernetes") && (c.fleets === undefined || c.fleets.length === 0)

/** Every rule, in the order of the configuration reference. */
export const UNSUPPORTED_RULES: ReadonlyArray<UnsupportedRule> = [
  {
    key: "nodes",
    types: ["fleet"],
    refused: "any value (fleets provisioned from backends)",
    comesWith: "clouds",
    instead: "`ssh_config` (your own hosts)",
    find: (c) =>
      c.type === "fleet" && c.nodes !== undefined
        ? one(["nodes"], notYet("`nodes` in a fleet", "fleets provisioned from backends are not created in this build (a run provisions its own instance from the project's backends and reuses idle ones); a fleet of your own hosts (`ssh_config`) works", "clouds"))
        : none
  },
  {
    key: "blocks",
    types: ["fleet"],
    refused: "anything but `1`",
    find: (c) =>
      c.type !== "fleet"
        ? none
        : [
          ...(c.blocks !== undefined && c.blocks !== 1 ? one(["blocks"], notYet(`\`blocks: ${c.blocks}\``, "an instance is not split into blocks in this build: each host takes one job at a time; write `blocks: 1` or leave it out")) : none),
          ...(c.sshConfig?.hosts ?? []).flatMap((h, i) =>
            h.blocks !== undefined && h.blocks !== 1
              ? one(["ssh_config", "hosts", i, "blocks"], notYet(`\`ssh_config.hosts[${i}].blocks: ${h.blocks}\``, "a host is not split into blocks in this build: it takes one job at a time; leave it out"))
              : none)
        ]
  },
  {
    key: "resources, backends, regions, instance_types, spot_policy, max_price, retry, idle_duration, termination_policy",
    types: ["fleet"],
    refused: "with `ssh_config`",
    find: (c) =>
      c.type !== "fleet" || c.sshConfig === undefined
        ? none
        : (
          [
            ["resources", c.resources],
            ["backends", c.backends],
            ["regions", c.regions],
            ["instance_types", c.instanceTypes],
            ["spot_policy", c.spotPolicy],
            ["max_price", c.maxPrice],
            ["retry", c.retry],
            ["idle_duration", c.idleDuration],
            ["termination_policy", c.terminationPolicy]
          ] as const
        ).flatMap(([key, value]) =>
          value === undefined
            ? none
            : one([key], `\`${key}\` applies to fleets provisioned from backends, not to a fleet of your own hosts (\`ssh_config\`): its hosts are what they are, and they stay in the fleet until it is deleted; drop \`${key}\``))
  },
  {
    key: "env",
    types: RUN_TYPES,
    refused: "a name without a value that reaches the server (`dstack apply` fills it from its own environment first)",
    instead: "give the value: `NAME: value` or `NAME=value`, or set it where `dstack apply` runs",
    find: (c) =>
      isRun(c)
        ? Object.entries(c.env ?? {}).flatMap(([name, value]) =>
          value === null
            ? one(["env", name], `\`env.${name}\` has no value: a name without one takes its value from the client's environment (\`dstack apply\` fills it from its own before it submits), and this one came without; give it a value (\`${name}: value\` or \`${name}=value\`)`)
            : none)
        : none
  },
  {
    key: "${{ secrets.NAME }}",
    types: RUN_TYPES,
    refused: "a reference outside `env` values and `registry_auth`",
    instead: "refer to secrets in `env` (and read the variable in `commands`) or `registry_auth`",
    find: (c) =>
      isRun(c)
        ? secretReferences(c, [], false)
          .filter(({ path }) => path[0] !== "env" && path[0] !== "registry_auth")
          .map(({ path, name }) => ({
            path,
            message: `${code(path)} refers to secret ${name}, but secrets are put only into \`env\` values and \`registry_auth\`: elsewhere the reference would reach the job as written; set an env variable to the secret and use it there`
          }))
        : none
  },
  {
    key: "ports",
    types: ["task", "dev-environment"],
    refused: "`*:PORT` (any free local port)",
    instead: "`PORT` or `LOCAL:PORT`",
    find: (c) =>
      (c.type === "task" || c.type === "dev-environment")
        ? (c.ports ?? []).flatMap((p, i) =>
          p.localPort === undefined
            ? one(["ports", i], notYet(`\`ports[${i}]\` as \`*:${p.containerPort}\` (any free local port)`, `attach forwards a port to the same local port number; write \`${p.containerPort}\` or \`LOCAL:${p.containerPort}\``))
            : none)
        : none
  },
  {
    key: "volumes",
    types: RUN_TYPES,
    refused: "a network volume (`name:/path`, `{name, path}`) unless `backends` is `[kubernetes]`; an instance directory without `image`",
    comesWith: "clouds",
    instead: "an instance directory with `image`; on Kubernetes (`backends: [kubernetes]`) a network volume is the PersistentVolumeClaim of its name",
    find: (c) =>
      isRun(c)
        ? (c.volumes ?? []).flatMap((v, i) =>
          !isInstanceMount(v)
            ? onlyKubernetes(c)
              ? none
              : one(["volumes", i], notYet(`\`volumes[${i}]\` (network volume ${v.name})`, "only the kubernetes backend provides network volumes here (a PersistentVolumeClaim of that name): set `backends: [kubernetes]`; a directory of the instance (`/dir:/path`) works with `image`", "clouds"))
            : c.image === undefined
              ? one(["volumes", i], `\`volumes[${i}]\` needs \`image\`: an instance directory is mounted only into a container, and without an image the job runs as processes on the host; set \`image\`, or use ${v.instancePath} directly`)
              : none)
        : none
  },
  containerOnly("privileged", (c) => c.privileged === true, "privileged mode applies"),
  containerOnly("entrypoint", (c) => c.entrypoint !== undefined, "an entrypoint applies"),
  containerOnly("user", (c) => c.user !== undefined, "the user is switched"),
  containerOnly("registry_auth", (c) => c.registryAuth !== undefined, "registry credentials are used (to pull an image)"),
  containerOnly("resources.shm_size", (c) => c.resources.shmSize !== undefined, "the shared memory size is set"),
  anyValue("reservation", [...RUN_TYPES, "fleet"], (c) => c.reservation, "no backend here uses capacity reservations", "clouds"),
  {
    key: "resources.gpu.compute_capability",
    types: [...RUN_TYPES, "fleet"],
    refused: "any value",
    comesWith: "clouds",
    find: (c) =>
      c.resources?.gpu.computeCapability !== undefined
        ? one(["resources", "gpu", "compute_capability"], notYet("`resources.gpu.compute_capability`", "offers here do not say which compute capability their GPUs have, so it cannot be matched", "clouds"))
        : none
  },
  {
    key: "creation_policy",
    types: RUN_TYPES,
    refused: "`reuse`",
    comesWith: "fleets",
    find: (c) =>
      isRun(c) && c.creationPolicy === "reuse"
        ? one(["creation_policy"], notYet("`creation_policy: reuse`", "a run takes an idle instance when one fits and otherwise provisions one (`reuse-or-create`, the default)", "fleets"))
        : none
  },
  {
    key: "termination_policy",
    types: RUN_TYPES,
    refused: "`dont-destroy`",
    instead: "`idle_duration: off`",
    find: (c) =>
      isRun(c) && c.terminationPolicy === "dont-destroy"
        ? one(["termination_policy"], notYet("`termination_policy: dont-destroy`", "idle instances end after `idle_duration`; to keep them, write `idle_duration: off`"))
        : none
  },
  anyValue("pool_name", RUN_TYPES, (c) => (isRun(c) ? c.poolName : undefined), "pools (now fleets) cannot be created in this build", "fleets"),
  anyValue("instance_name", RUN_TYPES, (c) => (isRun(c) ? c.instanceName : undefined), "instances are named after the job that provisioned them", "fleets"),
  {
    key: "port",
    types: ["service"],
    refused: "a local port other than the service's (`8080:8000`, `*:8000`)",
    instead: "`port: PORT`",
    find: (c) =>
      c.type === "service" && c.port.localPort !== c.port.containerPort
        ? one(["port"], `the local part of \`port\` (${c.port.localPort ?? "*"}:${c.port.containerPort}) is not supported: it is where a gateway would serve the service, and the server is the gateway here (it serves the service at \`/proxy/services/{project}/{run}/\`); write \`port: ${c.port.containerPort}\``)
        : none
  },
  {
    key: "gateway",
    types: ["service"],
    refused: "a gateway name or `true` (`false` is accepted)",
    instead: "leave it out: the server proxies the service at `/proxy/services/{project}/{run}/`",
    find: (c) =>
      c.type === "service" && c.gateway !== undefined && c.gateway !== false
        ? one(["gateway"], "`gateway` is not supported: the server is the gateway here (it proxies, autoscales and serves WebSockets at `/proxy/services/{project}/{run}/`); leave `gateway` out, or write `false`. Custom domains come with a later release")
        : none
  },
  {
    key: "https",
    types: ["service"],
    refused: "`false` (the default, `true`, is accepted)",
    instead: "leave it out: the service is served as the server is",
    find: (c) =>
      c.type === "service" && c.https === false
        ? one(["https"], "`https: false` is not supported: the server is the gateway here, and a service is served over whatever the server itself is served over; leave `https` out")
        : none
  },
  anyValue("version", ["dev-environment"], (c) => (c.type === "dev-environment" ? c.version : undefined), "no IDE server is installed in this build (the IDE installs its own over `ssh RUN`); leave `version` out")
]

/**
 * The keys of a configuration that nothing in this build carries out, each with a message.
 * Empty when every key given is honoured.
 * @example
 * unsupportedKeys(service).map((k) => k.message)
 * // ["`scaling` is not supported yet: replicas do not follow requests per second yet; … roadmap"]
 */
export const unsupportedKeys = (configuration: AnyConfiguration): ReadonlyArray<UnsupportedKey> =>
  UNSUPPORTED_RULES.flatMap((rule) => rule.find(configuration))

/** A configuration with keys this build does not carry out; `keys` lists every one at once. */
export class UnsupportedConfigurationError extends Schema.TaggedError<UnsupportedConfigurationError>("@dstack-ts/core/UnsupportedConfigurationError")(
  "UnsupportedConfigurationError",
  {
    keys: Schema.Array(Schema.Struct({ path: Schema.Array(Schema.Union(Schema.String, Schema.Number)), message: Schema.String }))
  }
) {
  override get message(): string {
    return this.keys.map((k) => k.message).join("\n")
  }
}

/** Fails with every unsupported key of the configuration, or succeeds when there is none. */
export const checkSupported = (configuration: AnyConfiguration): Effect.Effect<void, UnsupportedConfigurationError> =>
  Effect.suspend(() => {
    const keys = unsupportedKeys(configuration)
    return keys.length === 0 ? Effect.void : Effect.fail(new UnsupportedConfigurationError({ keys }))
  })
