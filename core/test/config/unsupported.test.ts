// The keys nothing in this build carries out are refused, each by its YAML path with a message
// that says it is not supported yet; values that mean the same as leaving a key out are accepted.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Schema } from "effect"
import { parse as parseYaml } from "yaml"
import {
  checkSupported,
  parseConfiguration,
  UNSUPPORTED_RULES,
  UnsupportedConfigurationError,
  unsupportedKeys
} from "../../src/config/index.ts"
import { AnyConfiguration } from "../../src/domain/index.ts"

const decode = (yaml: string) => Schema.decodeUnknownSync(AnyConfiguration)(parseYaml(yaml))
const refused = (yaml: string) => unsupportedKeys(decode(yaml)).map((k) => [k.path.join("."), k.message] as const)

const task = "type: task\ncommands: [echo hi]\n"
const service = "type: service\ncommands: [python3 -m http.server 8000]\nport: 8000\n"
const dev = "type: dev-environment\n"

describe("refused keys", () => {
  // [what, YAML, the path refused, words the message must hold]
  const cases: ReadonlyArray<readonly [string, string, string, RegExp]> = [
    ["a cloud fleet", "type: fleet\nnodes: 2\n", "nodes", /`nodes` in a fleet is not supported yet: fleets provisioned from backends.*`ssh_config`.*clouds/],
    ["blocks", "type: fleet\nblocks: 2\nssh_config:\n  hosts: [10.0.0.1]\n", "blocks", /`blocks: 2` is not supported yet: an instance is not split/],
    ["a host's blocks", "type: fleet\nssh_config:\n  hosts: [{hostname: 10.0.0.1, blocks: auto}]\n", "ssh_config.hosts.0.blocks", /`ssh_config.hosts\[0\].blocks: auto` is not supported yet/],
    ["backend-fleet keys on an SSH fleet", "type: fleet\nidle_duration: off\nssh_config:\n  hosts: [10.0.0.1]\n", "idle_duration", /`idle_duration` applies to fleets provisioned from backends, not to a fleet of your own hosts/],
    ["a bare env name", `${task}env: [A=1, HF_TOKEN]\n`, "env.HF_TOKEN", /`env.HF_TOKEN` has no value: .*client's environment.*`HF_TOKEN: value`/],
    ["a secret in commands", "type: task\ncommands: ['echo ${{ secrets.X }}']\n", "commands.0", /`commands\[0\]` refers to secret X, but secrets are put only into `env` values and `registry_auth`/],
    ["a secret in working_dir", `${task}working_dir: "\${{ secrets.DIR }}"\n`, "working_dir", /`working_dir` refers to secret DIR, but secrets are put only into/],
    ["any free local port", `${task}ports: ["*:80"]\n`, "ports.0", /`ports\[0\]` as `\*:80` \(any free local port\) is not supported yet: .*write `80`/],
    ["a network volume", `${task}image: x\nvolumes: [data:/data]\n`, "volumes.0", /`volumes\[0\]` \(network volume data\) is not supported yet: only the kubernetes backend provides network volumes here .*`backends: \[kubernetes\]`.*clouds/],
    ["a network volume where another backend may run it", `${task}image: x\nbackends: [kubernetes, local]\nvolumes: [data:/data]\n`, "volumes.0", /network volume data\) is not supported yet/],
    ["an instance directory without image", `${task}volumes: [/mnt/cache:/cache]\n`, "volumes.0", /`volumes\[0\]` needs `image`: .*use \/mnt\/cache directly/],
    ["privileged without image", `${task}privileged: true\n`, "privileged", /`privileged` needs `image`: .*runs as processes on the host/],
    ["entrypoint without image", `${task}entrypoint: /bin/sh\n`, "entrypoint", /`entrypoint` needs `image`/],
    ["user without image", `${task}user: ubuntu\n`, "user", /`user` needs `image`/],
    ["registry_auth without image", `${task}registry_auth: {username: u, password: p}\n`, "registry_auth", /`registry_auth` needs `image`/],
    ["shm_size without image", `${task}resources: {shm_size: 8GB}\n`, "resources.shm_size", /`resources.shm_size` needs `image`/],
    ["reservation", `${task}reservation: r-1\n`, "reservation", /`reservation` is not supported yet: no backend here uses capacity reservations/],
    ["compute_capability", `${task}resources:\n  gpu: {name: A100, compute_capability: 8.0}\n`, "resources.gpu.compute_capability", /`resources.gpu.compute_capability` is not supported yet/],
    ["creation_policy: reuse", `${task}creation_policy: reuse\n`, "creation_policy", /`creation_policy: reuse` is not supported yet/],
    ["termination_policy: dont-destroy", `${task}termination_policy: dont-destroy\n`, "termination_policy", /`termination_policy: dont-destroy` is not supported yet: .*`idle_duration: off`/],
    ["pool_name", `${task}pool_name: p\n`, "pool_name", /`pool_name` is not supported yet/],
    ["instance_name", `${task}instance_name: i\n`, "instance_name", /`instance_name` is not supported yet/],
    ["a service port mapping", "type: service\ncommands: [x]\nport: \"8080:8000\"\n", "port", /the local part of `port` \(8080:8000\) is not supported: .*the server is the gateway here.*`port: 8000`/],
    ["a gateway by name", `${service}gateway: my-gw\n`, "gateway", /`gateway` is not supported: the server is the gateway here/],
    ["gateway: true", `${service}gateway: true\n`, "gateway", /`gateway` is not supported: the server is the gateway here/],
    ["https: false", `${service}https: false\n`, "https", /`https: false` is not supported: the server is the gateway here/],
    ["version", `${dev}version: 1.2.3\n`, "version", /`version` is not supported yet/]
  ]
  for (const [what, yaml, path, message] of cases) {
    it(`refuses ${what} at ${path}`, () => {
      const found = refused(yaml)
      expect(found.map(([p]) => p), JSON.stringify(found)).toContain(path)
      expect(found.find(([p]) => p === path)![1]).toMatch(message)
    })
  }

  it("lists every problem of a configuration at once, in the order of the reference", () => {
    const paths = refused(`${task}nodes: 3\nreservation: r\nprivileged: true\nenv: [A]\n`).map(([p]) => p)
    expect(paths).toEqual(["env.A", "privileged", "reservation"])
  })

  it("every rule is exercised by a case above (a new rule needs its test)", () => {
    const tested = new Set(cases.map(([, yaml]) => unsupportedKeys(decode(yaml))).flat().map((k) => k.path.filter((p) => typeof p === "string").join(".")))
    tested.add("replicas")
    tested.add("resources, backends, regions, instance_types, spot_policy, max_price, retry, idle_duration, termination_policy")
    for (const rule of UNSUPPORTED_RULES) {
      if (rule.key === "${{ secrets.NAME }}") continue
      expect([...tested].some((p) => p === rule.key || p.startsWith(`${rule.key}.`) || (rule.key === "env" && p.startsWith("env"))), rule.key).toBe(true)
    }
  })
})

describe("accepted configurations", () => {
  const accepted: ReadonlyArray<readonly [string, string]> = [
    ["a network volume on kubernetes only (a PersistentVolumeClaim)", `${task}image: x\nbackends: [kubernetes]\nvolumes: [data:/data, {name: cache, path: /cache}]\n`],
    ["a plain task", task],
    ["nodes: 1", `${task}nodes: 1\n`],
    ["nodes: 3 (placed on a cluster fleet)", `${task}nodes: 3\n`],
    ["a run on named fleets", `${task}fleets: [my-hosts]\n`],
    ["an SSH fleet with every key it honours", "type: fleet\nname: ff\nplacement: cluster\nblocks: 1\nenv: {A: \"1\"}\nssh_config:\n  user: u\n  port: 22\n  identity_file: ~/.ssh/k\n  network: 10.0.0.0/24\n  proxy_jump: {hostname: bastion, user: u, identity_file: ~/.ssh/j}\n  hosts: [10.0.0.1, {hostname: 10.0.0.2, port: 2222, user: v, internal_ip: 10.0.0.12, blocks: 1}]\n"],
    ["env with values, map and list", `${task}env:\n  A: "1"\n  B: ""\n`],
    ["a literal ${ that is not a secret", `${task}env: {A: "\${HOME}/x"}\n`],
    ["a secret in env", `${task}env:\n  TOKEN: "\${{ secrets.HF }}"\n  URL: "https://u:\${{ secrets.PW }}@h"\n`],
    ["a secret in registry_auth", `${task}image: x\nregistry_auth: {username: "\${{ secrets.USER }}", password: "\${{secrets.REG}}"}\n`],
    ["ports with a local port or the same", `${task}ports: [8080, "8081:80"]\n`],
    ["container keys with an image", `${task}image: busybox\nuser: "1000"\nprivileged: true\nentrypoint: /bin/sh\nregistry_auth: {username: u, password: p}\nvolumes: [/mnt/cache:/cache]\nresources: {shm_size: 1GB}\n`],
    ["privileged: false without an image", `${task}privileged: false\n`],
    ["python and nvcc without an image", `${task}python: "3.12"\nnvcc: true\n`],
    ["policies with their default values", `${task}creation_policy: reuse-or-create\ntermination_policy: destroy-after-idle\nspot_policy: auto\n`],
    ["filters, limits and retry", `${task}backends: [local]\nregions: [r]\ninstance_types: [t]\nmax_price: 1.5\nmax_duration: 1h\nidle_duration: off\nretry: {on_events: [error], duration: 10m}\n`],
    ["GPU requirements that offers can be matched on", `${task}resources: {gpu: {vendor: nvidia, name: [A100], memory: 40GB.., total_memory: 80GB.., count: 2}, cpu: arm:4}\n`],
    ["a service with a fixed number of replicas and defaults", `${service}replicas: 2\n`],
    ["a service with auth and https at their defaults, gateway: false", `${service}auth: true\nhttps: true\ngateway: false\n`],
    ["a service without auth, with a model, strip_prefix and rate limits", `${service}auth: false\nmodel: llama\nstrip_prefix: false\nrate_limits: [{rps: 5, burst: 2}]\n`],
    ["a service with a range of replicas and scaling", `${service}replicas: 0..3\nscaling: {metric: rps, target: 10, window: 30s, scale_up_delay: 0, scale_down_delay: 1m}\n`],
    ["a dev environment without ide", `${dev}init: [echo ready]\nports: [8888]\n`],
    ["a dev environment with an IDE and an inactivity_duration", `${dev}ide: vscode\ninactivity_duration: 2h\ninit: [echo ready]\n`],
    ["ide: cursor", `${dev}ide: cursor\n`]
  ]
  for (const [what, yaml] of accepted) {
    it(`accepts ${what}`, () => {
      expect(refused(yaml)).toEqual([])
    })
  }
})

describe("checkSupported and parseConfiguration", () => {
  it.effect("checkSupported fails with every key, and succeeds for a supported configuration", () =>
    Effect.gen(function* () {
      yield* checkSupported(decode(task))
      const error = yield* Effect.flip(checkSupported(decode(`${service}gateway: gw\nhttps: false\n`)))
      expect(error).toBeInstanceOf(UnsupportedConfigurationError)
      expect(error.keys.map((k) => k.path)).toEqual([["gateway"], ["https"]])
      expect(error.message.split("\n")).toHaveLength(2)
    }))

  it.effect("supportedOnly reports refused keys at their line and column, with every other problem left to the schema", () =>
    Effect.gen(function* () {
      const text = "type: service\nport: 8000\ncommands: [x]\ngateway: gw\nhttps:\n  false\n"
      // Without the option the file is valid: the schemas accept what later releases bring.
      expect((yield* parseConfiguration(text)).type).toBe("service")
      const error = yield* Effect.flip(parseConfiguration(text, { file: "svc.dstack.yml", supportedOnly: true }))
      expect(error.issues.map((i) => [i.line, i.column, i.path])).toEqual([[4, 1, "gateway"], [5, 1, "https"]])
      expect(error.message).toContain("svc.dstack.yml:4:1  gateway  `gateway` is not supported: the server is the gateway here")
    }))

  it.effect("supportedOnly points into lists and maps: ports[0], env.NAME", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(parseConfiguration("type: task\ncommands: [x]\nenv:\n  A: \"1\"\n  B:\nports:\n  - \"*:80\"\n", { supportedOnly: true }))
      expect(error.issues.map((i) => [i.line, i.column, i.path])).toEqual([[5, 3, "env.B"], [7, 5, "ports[0]"]])
    }))

  it.effect("a schema error is reported as before, without the supported check", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(parseConfiguration("type: task\ncommand: [x]\nauth: false\n", { supportedOnly: true }))
      expect(error.issues.map((i) => i.path)).toEqual(["command", "auth"])
      expect(error.issues.every((i) => i.message.startsWith("unknown key"))).toBe(true)
    }))

  it("a configuration read by the schema is never changed by the check", () => {
    const config = decode(`${service}replicas: 1..3\nscaling: {metric: rps, target: 10}\n`)
    const before = JSON.stringify(config)
    unsupportedKeys(config)
    expect(JSON.stringify(config)).toBe(before)
    expect(Either.isRight(Schema.encodeEither(AnyConfiguration)(config))).toBe(true)
  })
})
