// Configuration schemas: defaults, older key names, cross-field rules and round trips.
import { describe, expect, it } from "@effect/vitest"
import { Either, ParseResult, Schema } from "effect"
import {
  AnyConfiguration,
  AnyRunConfiguration,
  DEFAULT_RESOURCES,
  matchResources,
  ResourcesSpec,
  ServiceConfiguration,
  TaskConfiguration
} from "../../../src/domain/index.ts"

const decode = <A, I>(schema: Schema.Schema<A, I>, u: unknown) =>
  Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "error" })(u)

const ok = <A, I>(schema: Schema.Schema<A, I>, u: unknown): A => {
  const r = decode(schema, u)
  if (Either.isLeft(r)) throw new Error(r.left.message)
  return r.right
}

const problems = <A, I>(schema: Schema.Schema<A, I>, u: unknown) => {
  const r = decode(schema, u)
  if (Either.isRight(r)) throw new Error(`expected a failure, got ${JSON.stringify(r.right)}`)
  return ParseResult.ArrayFormatter.formatErrorSync(r.left)
    .filter((i) => !i.message.startsWith("Expected undefined"))
    .map((i) => ({ path: i.path.join("."), message: i.message }))
}

describe("defaults", () => {
  it("a minimal task gets the default resources and one node", () => {
    const task = ok(TaskConfiguration, { type: "task", commands: ["echo hi"] })
    expect(task).toEqual({ type: "task", commands: ["echo hi"], nodes: 1, resources: DEFAULT_RESOURCES })
    expect(task.resources).toEqual({
      cpu: { count: { min: 2 } },
      memory: { min: 8 },
      gpu: { count: { min: 0 } },
      disk: { size: { min: 100 } }
    })
  })

  it("a partial resources block keeps the other defaults", () => {
    expect(ok(ResourcesSpec, { gpu: "A100" })).toEqual({ ...DEFAULT_RESOURCES, gpu: { name: ["A100"], count: { min: 1, max: 1 } } })
  })

  it("a service defaults to https, auth and one replica; scaling delays default to 300 s and 600 s", () => {
    const s = ok(ServiceConfiguration, { type: "service", port: 8000, replicas: "0..2", scaling: { metric: "rps", target: 5 } })
    expect(s.https).toBe(true)
    expect(s.auth).toBe(true)
    expect(s.replicas).toEqual({ min: 0, max: 2 })
    expect(s.scaling).toEqual({ metric: "rps", target: 5, window: 60, scaleUpDelay: 300, scaleDownDelay: 600 })
    expect(s.stripPrefix).toBe(true)
    expect(ok(ServiceConfiguration, { type: "service", port: 80 }).replicas).toEqual({ min: 1, max: 1 })
  })

  it("a model name becomes an OpenAI model at /v1", () => {
    const s = ok(ServiceConfiguration, { type: "service", port: 80, model: "llama-3" })
    expect(s.model).toEqual({ type: "chat", format: "openai", name: "llama-3", prefix: "/v1" })
  })

  it("scaling needs a range of replicas, a window of 30s, 1m or 5m; rate limit prefixes are unique", () => {
    const bad = (input: unknown) => Either.getLeft(Schema.decodeUnknownEither(ServiceConfiguration)(input)).pipe((e) => (e._tag === "Some" ? e.value.message : ""))
    expect(bad({ type: "service", port: 80, replicas: 2, scaling: { metric: "rps", target: 5 } })).toMatch(/scaling needs a range of replicas/)
    expect(bad({ type: "service", port: 80, replicas: "0..2", scaling: { metric: "rps", target: 5, window: "10s" } })).toMatch(/the window must be one of 30s, 1m, 5m/)
    expect(bad({ type: "service", port: 80, rate_limits: [{ rps: 1 }, { prefix: "/", rps: 2 }] })).toMatch(/the prefix \/ has a rate limit already/)
  })
})

describe("older keys", () => {
  it("retry_policy {retry, limit} becomes retry on every event", () => {
    const t = ok(TaskConfiguration, { type: "task", retry_policy: { retry: true, limit: "3d" } })
    expect(t.retry).toEqual({ onEvents: ["no-capacity", "interruption", "error"], duration: 259200 })
    expect("retryPolicy" in t).toBe(false)
    expect(ok(TaskConfiguration, { type: "task", retry_policy: { retry: false } }).retry).toEqual({ onEvents: [], duration: 3600 })
    expect(ok(TaskConfiguration, { type: "task", retry_policy: { retry: true } }).retry?.duration).toBe(3600)
  })

  it("termination_idle_time becomes idleDuration", () => {
    expect(ok(TaskConfiguration, { type: "task", termination_idle_time: "10m" }).idleDuration).toBe(600)
    expect(ok(TaskConfiguration, { type: "task", idle_duration: "off" }).idleDuration).toBe("off")
  })

  it("refuses the older and the newer key together", () => {
    expect(problems(TaskConfiguration, { type: "task", retry: true, retry_policy: { retry: true }, idle_duration: 5, termination_idle_time: 6 })).toEqual([
      { path: "retry_policy", message: "retry_policy is the older form of retry: give one of them, not both" },
      { path: "termination_idle_time", message: "termination_idle_time is the older name of idle_duration: give one of them, not both" }
    ])
  })
})

describe("cross-field rules", () => {
  it("python and nvcc are exclusive with image", () => {
    expect(problems(TaskConfiguration, { type: "task", image: "ubuntu", python: "3.11", nvcc: true })).toEqual([
      { path: "python", message: "python and image are mutually exclusive: install Python in your image, or drop image" },
      { path: "nvcc", message: "nvcc and image are mutually exclusive: install the CUDA compiler in your image, or drop image" }
    ])
  })

  it("python must be a supported version; 3.10 written as a YAML number is understood", () => {
    expect(ok(TaskConfiguration, { type: "task", python: 3.1 }).python).toBe("3.10")
    expect(ok(TaskConfiguration, { type: "task", python: 3.12 }).python).toBe("3.12")
    expect(problems(TaskConfiguration, { type: "task", python: "2.7" })).toEqual([
      { path: "python", message: "expected a Python version, one of 3.9, 3.10, 3.11, 3.12, 3.13, got \"2.7\"" }
    ])
  })

  it("a range of replicas needs scaling", () => {
    expect(problems(ServiceConfiguration, { type: "service", port: 80, replicas: "1..4" })).toEqual([
      { path: "replicas", message: "a range of replicas needs scaling rules: add scaling: {metric: rps, target: N}" }
    ])
    expect(problems(ServiceConfiguration, { type: "service", port: 80, scaling: { metric: "latency", target: 1 } })).toEqual([
      { path: "scaling.metric", message: "expected one of rps, got \"latency\"" }
    ])
  })

  it("a service needs a port", () => {
    expect(problems(ServiceConfiguration, { type: "service" })).toEqual([{ path: "port", message: "is missing" }])
  })

  it("a fleet needs nodes or ssh_config, not both", () => {
    expect(problems(AnyConfiguration, { type: "fleet", name: "gpu-fleet" })).toEqual([
      { path: "", message: "a fleet needs nodes (instances from backends) or ssh_config (your own hosts)" }
    ])
    expect(problems(AnyConfiguration, { type: "fleet", nodes: 2, ssh_config: { hosts: ["a"] } })[0].path).toBe("ssh_config")
    expect(problems(AnyConfiguration, { type: "fleet", ssh_config: { hosts: [] } })).toEqual([{ path: "ssh_config.hosts", message: "give at least one host" }])
  })

  it("type picks the schema and a bad type says which are allowed", () => {
    expect(problems(AnyConfiguration, { type: "workflow" })).toEqual([
      { path: "type", message: "expected one of task, service, dev-environment, fleet, got \"workflow\"" }
    ])
    expect(problems(AnyRunConfiguration, { type: "fleet", nodes: 1 })).toEqual([
      { path: "type", message: "expected one of task, service, dev-environment, got \"fleet\"" }
    ])
    expect(problems(AnyConfiguration, { commands: [] })).toEqual([
      { path: "type", message: "type is missing: add type: task | service | dev-environment | fleet" }
    ])
  })
})

describe("round trip: decode → encode → decode", () => {
  const samples: ReadonlyArray<unknown> = [
    { type: "task", commands: ["echo hi"], env: ["A=1", "B"], ports: [80, "8080:80", "*:3000"], resources: { cpu: "arm:4..", memory: "512MB..", gpu: "H100,A100:80GB:1..4", shm_size: "8GB", disk: "1TB" } },
    { type: "task", image: "ubuntu", registry_auth: { username: "u", password: "p" }, volumes: ["data:/data", "/mnt:/mnt"], retry_policy: { retry: true, limit: "2h" }, max_duration: "off", backends: ["ssh", "aws"], spot_policy: "auto", max_price: 1.5, nodes: 2 },
    { type: "service", port: "8080:80", model: { name: "m", prefix: "/api" }, gateway: false, replicas: "0..4", scaling: { metric: "rps", target: 10, scale_up_delay: "1m" }, auth: false },
    { type: "dev-environment", ide: "vscode", python: 3.1, init: ["pip install x"], idle_duration: "1h", inactivity_duration: "2h", creation_policy: "reuse", termination_policy: "dont-destroy" },
    { type: "fleet", name: "my-fleet", nodes: "1..4", placement: "cluster", resources: { gpu: "tpu:v5litepod-8" }, retry: { on_events: ["no-capacity"] }, idle_duration: "3d" },
    { type: "fleet", ssh_config: { user: "ubuntu", identity_file: "~/.ssh/k", proxy_jump: { hostname: "bastion" }, hosts: ["10.0.0.1", { hostname: "10.0.0.2", port: 2222 }] } }
  ]
  it.each(samples.map((s) => [(s as { type: string }).type, s]))("%s", (_, sample) => {
    const decoded = ok(AnyConfiguration, sample)
    const encoded = Schema.encodeSync(AnyConfiguration)(decoded)
    expect(ok(AnyConfiguration, encoded)).toEqual(decoded)
    expect(Schema.encodeSync(AnyConfiguration)(ok(AnyConfiguration, encoded))).toEqual(encoded)
  })
})

describe("matchResources", () => {
  const spec = ok(ResourcesSpec, { cpu: "x86:2..", memory: "8GB..", gpu: "A100:80GB:2", disk: "100GB.." })
  const gpus = (n: number, name = "A100", memoryMib = 81920) => Array.from({ length: n }, () => ({ name, memoryMib, vendor: "nvidia" }))

  it("matches an instance that has everything", () => {
    expect(matchResources(spec, { cpus: 16, memoryMib: 65536, gpus: gpus(2), disk: { sizeMib: 204800 }, cpuArch: "x86_64" })).toEqual({ _tag: "Match" })
  })

  it("lists each unmet requirement in plain words", () => {
    expect(matchResources(spec, { cpus: 1, memoryMib: 4096, gpus: [], disk: { sizeMib: 51200 }, cpuArch: "arm64" })).toEqual({
      _tag: "Mismatch",
      unmet: [
        "cpu: needs ≥2 cores, instance has 1",
        "cpu: needs x86 architecture, instance is arm",
        "memory: needs ≥8GB, instance has 4GB",
        "gpu: needs 2× A100 with 80GB, instance has 0 GPUs",
        "disk: needs ≥100GB, instance has 50GB"
      ]
    })
  })

  it("counts only the GPUs that fit the name and memory", () => {
    expect(matchResources(spec, { cpus: 8, memoryMib: 65536, gpus: gpus(2, "A100", 40960) })).toEqual({
      _tag: "Mismatch",
      unmet: ["gpu: needs 2× A100 with 80GB, instance has 2× A100 (40GB)"]
    })
    expect(matchResources(spec, { cpus: 8, memoryMib: 65536, gpus: gpus(8) })._tag).toBe("Mismatch")
  })

  it("the default spec takes any GPU count and checks total memory when asked", () => {
    const any = ok(ResourcesSpec, { memory: "1GB..", disk: "1GB.." })
    expect(matchResources(any, { cpus: 2, memoryMib: 2048, gpus: gpus(3) })).toEqual({ _tag: "Match" })
    const total = ok(ResourcesSpec, { gpu: { count: "1..", total_memory: "160GB.." } })
    expect(matchResources(total, { cpus: 2, memoryMib: 16384, gpus: gpus(1) })).toEqual({
      _tag: "Mismatch",
      unmet: ["gpu: needs ≥1× GPU ≥160GB in total, instance has 1× A100 (80GB)"]
    })
  })
})

describe("inactivity_duration of a dev environment", () => {
  it("reads upstream's duration forms and off", () => {
    expect(ok(AnyConfiguration, { type: "dev-environment", inactivity_duration: "2h" })).toMatchObject({ inactivityDuration: 7200 })
    expect(ok(AnyConfiguration, { type: "dev-environment", inactivity_duration: 90 })).toMatchObject({ inactivityDuration: 90 })
    expect(ok(AnyConfiguration, { type: "dev-environment", inactivity_duration: "off" })).toMatchObject({ inactivityDuration: "off" })
  })
  it("refuses a value that is no duration, naming the key", () => {
    expect(() => ok(AnyConfiguration, { type: "dev-environment", inactivity_duration: "soon" })).toThrow(/inactivity_duration/)
  })
})
