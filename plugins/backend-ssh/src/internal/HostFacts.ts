/**
 * What a host's probe (HostScripts.PROBE) printed, as facts: the machine's resources in the
 * words of resource specs (CPUs, memory and disk in MiB, `x86`/`arm`, GPUs by short name), and
 * what provisioning needs to know (home directory, node, systemd, sudo, Docker).
 */
import { InstanceDisk, InstanceGpu, InstanceResources } from "@dstack-ts/core"

export interface HostGpu {
  readonly name: string
  readonly memoryMib: number
  readonly vendor: "nvidia" | "amd"
}

export interface HostFacts {
  readonly arch: string
  readonly cpuArch: "x86" | "arm" | undefined
  readonly cpus: number
  readonly memoryMib: number
  readonly diskMib: number
  readonly diskFreeMib: number
  readonly home: string
  readonly root: boolean
  readonly ip: string | undefined
  /** The absolute path of `node`, when installed. */
  readonly node: string | undefined
  readonly nodeVersion: string | undefined
  readonly systemd: boolean
  /** What the host says about supervising services (`DSTACK_RUNNER_SERVICE`), when it does. */
  readonly serviceHint: string | undefined
  readonly sudo: boolean
  /** Docker answered `/_ping` on /var/run/docker.sock to this user. */
  readonly docker: boolean
  /** Why Docker did not answer, when the socket exists but refused. */
  readonly dockerProblem: string | undefined
  readonly gpus: ReadonlyArray<HostGpu>
}

/** `uname -m` in the words of resource specs. */
export const cpuArchOf = (machine: string): "x86" | "arm" | undefined =>
  /^(x86_64|amd64|i[3-6]86)$/.test(machine) ? "x86" : /^(aarch64|arm64|armv[0-9].*)$/.test(machine) ? "arm" : undefined

/**
 * The short GPU name requirements use (`H100`, `A100`, `RTX4090`, `MI300X`) from what the vendor
 * tools print (`NVIDIA H100 80GB HBM3`, `NVIDIA GeForce RTX 4090`, `AMD Instinct MI300X`).
 */
export const gpuShortName = (full: string): string => {
  const words = full.trim().split(/\s+/).filter((w) => !/^(nvidia|tesla|geforce|quadro|amd|instinct|radeon)$/i.test(w))
  if (words.length === 0) return full.trim()
  const first = words[0]!.split("-")[0]!
  if (/^rtx$/i.test(first) && words.length > 1) return `RTX${words[1]!.split("-")[0]}`
  return first
}

/** One `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits` line. */
const nvidiaGpu = (line: string): HostGpu | undefined => {
  const comma = line.lastIndexOf(",")
  const memoryMib = Number(line.slice(comma + 1).trim())
  return comma < 0 || !Number.isFinite(memoryMib) ? undefined : { name: gpuShortName(line.slice(0, comma)), memoryMib, vendor: "nvidia" }
}

/**
 * `amd-smi static --asic --vram --json` (ROCm 6): a list of GPUs, each with `asic.market_name`
 * and `vram.size` (`{ value, unit }` with unit MB or GB, or a number of MB).
 */
export const parseAmdSmi = (json: string): ReadonlyArray<HostGpu> => {
  let value: unknown
  try {
    value = JSON.parse(json)
  } catch {
    return []
  }
  const list = Array.isArray(value) ? value : (value as { gpu_data?: unknown })?.gpu_data
  if (!Array.isArray(list)) return []
  return list.flatMap((gpu: { asic?: { market_name?: string }; vram?: { size?: unknown } }) => {
    const name = gpu?.asic?.market_name
    const size = gpu?.vram?.size
    const memoryMib = typeof size === "number"
      ? size
      : typeof size === "object" && size !== null
      ? Number((size as { value?: unknown }).value) * (/^g/i.test(String((size as { unit?: unknown }).unit)) ? 1024 : 1)
      : NaN
    return typeof name === "string" && Number.isFinite(memoryMib) ? [{ name: gpuShortName(name), memoryMib, vendor: "amd" as const }] : []
  })
}

/** Reads the probe's `key=value` lines (keys may repeat: one `nvidia=` line per GPU). */
export const parseProbe = (output: string): HostFacts => {
  const values = new Map<string, Array<string>>()
  for (const line of output.split("\n")) {
    const eq = line.indexOf("=")
    if (eq <= 0) continue
    const key = line.slice(0, eq).trim()
    values.set(key, [...(values.get(key) ?? []), line.slice(eq + 1).trim()])
  }
  const one = (key: string) => values.get(key)?.[0]
  const num = (key: string) => Number(one(key) ?? NaN)
  const arch = one("arch") ?? "unknown"
  return {
    arch,
    cpuArch: cpuArchOf(arch),
    cpus: num("cpus"),
    memoryMib: Math.floor(num("mem_kib") / 1024),
    diskMib: Math.floor(num("disk_total_kib") / 1024),
    diskFreeMib: Math.floor(num("disk_free_kib") / 1024),
    home: one("home") ?? "",
    root: one("uid") === "0",
    ip: one("ip") || undefined,
    node: one("node"),
    nodeVersion: one("node_version"),
    systemd: one("systemd") === "1",
    serviceHint: one("service_hint"),
    sudo: one("sudo") === "1",
    docker: one("docker") === "200",
    dockerProblem: one("docker_error") ?? (one("docker") !== undefined && one("docker") !== "200" ? `HTTP ${one("docker")}` : undefined),
    gpus: [
      ...(values.get("nvidia") ?? []).flatMap((line) => nvidiaGpu(line) ?? []),
      ...parseAmdSmi(one("amd") ?? "")
    ]
  }
}

/** The host's resources as an instance type's. */
export const resourcesOf = (facts: HostFacts, hostname: string): InstanceResources =>
  new InstanceResources({
    cpus: facts.cpus,
    memoryMib: facts.memoryMib,
    gpus: facts.gpus.map((g) => new InstanceGpu({ name: g.name, memoryMib: g.memoryMib, vendor: g.vendor })),
    spot: false,
    disk: new InstanceDisk({ sizeMib: facts.diskMib }),
    ...(facts.cpuArch === undefined ? {} : { cpuArch: facts.cpuArch }),
    description: `SSH host ${hostname} (${facts.arch})`
  })
