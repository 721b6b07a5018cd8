/**
 * Resource requirements of a run or fleet (`resources:` in YAML) with the upstream shorthand
 * grammar (`cpu: arm:8`, `memory: 8GB..`, `gpu: A100:80GB:2`, `disk: 100GB..`), and the pure
 * check of an instance's resources against them that planning uses to explain exclusions.
 */
import { Either, Schema } from "effect"
import { scalar, show, withShorthand } from "./Grammar.ts"
import { formatMemory, Memory, parseMemory } from "./Memory.ts"
import { describeRange, IntRange, isInRange, MemoryRange, parseCount, parseRange, type Range } from "./Range.ts"


// ---------------------------------------------------------------------------------------------
// CPU

/** CPU architecture. YAML also takes `x86_64`/`amd64` for x86 and `aarch64`/`arm64` for arm. */
export const CPUArchitecture = scalar(
  Schema.Literal("x86", "arm"),
  (input) => {
    const arch = typeof input === "string" ? CPU_ARCH_ALIASES[input.toLowerCase()] : undefined
    return arch ? Either.right(arch) : Either.left(`expected a CPU architecture x86 or arm, got ${show(input)}`)
  },
  (a) => a
).annotations({ identifier: "CPUArchitecture", description: "`x86` or `arm`." })
export type CPUArchitecture = "x86" | "arm"

const CPU_ARCH_ALIASES: Record<string, CPUArchitecture> = {
  x86: "x86",
  x86_64: "x86",
  amd64: "x86",
  arm: "arm",
  arm64: "arm",
  aarch64: "arm"
}

const CPU_EXPECTED = "a CPU count or range, optionally with an architecture, such as 4, 2.., arm:8 or x86:4.."

const parseCpu = (input: string | number): Either.Either<CPUSpec, string> => {
  if (typeof input === "number") return Either.map(parseRange(input, parseCount, CPU_EXPECTED), (count) => ({ count }))
  let arch: CPUArchitecture | undefined
  let count: Range | undefined
  for (const raw of input.split(":")) {
    const token = raw.trim()
    const a = CPU_ARCH_ALIASES[token.toLowerCase()]
    if (a !== undefined) {
      if (arch !== undefined) return Either.left(`cpu: the architecture is given twice in ${show(input)}`)
      arch = a
      continue
    }
    const r = parseRange(token, parseCount, CPU_EXPECTED)
    if (Either.isLeft(r)) return Either.left(`expected ${CPU_EXPECTED}, got ${show(input)}`)
    if (count !== undefined) return Either.left(`cpu: the count is given twice in ${show(input)}`)
    count = r.right
  }
  return Either.right({ ...(arch ? { arch } : {}), count: count ?? DEFAULT_CPU_COUNT })
}

const DEFAULT_CPU_COUNT: Range = { min: 2 }

/** CPU requirements: `{arch?, count}`; YAML shorthands `4`, `2..`, `arm:8`, `x86:4..`. */
/** The object form of `cpu`. */
export const CPUSpecObject = Schema.Struct({
    arch: Schema.optionalWith(CPUArchitecture, { exact: true }).annotations({ description: "The CPU architecture: `x86` or `arm`." }),
    count: Schema.optionalWith(IntRange, { default: () => DEFAULT_CPU_COUNT }).annotations({
      description: "The number of CPU cores (a number or a range). Defaults to `2..`."
    })
  })

export const CPUSpec = withShorthand(
  CPUSpecObject,
  parseCpu,
  CPU_EXPECTED
).annotations({
  identifier: "CPUSpec",
  description: "CPU cores: a count or range (`4`, `2..`), optionally prefixed by the architecture (`arm:8`, `x86:4..`), or `{arch, count}`."
})
export interface CPUSpec {
  readonly arch?: CPUArchitecture
  readonly count: Range
}
export type CPUSpecEncoded = typeof CPUSpec.Encoded

// ---------------------------------------------------------------------------------------------
// GPU

/** GPU vendor. YAML also takes `tpu` for google. */
export const GPUVendor = scalar(
  Schema.Literal("nvidia", "amd", "google", "intel"),
  (input) => {
    const v = typeof input === "string" ? GPU_VENDOR_ALIASES[input.toLowerCase()] : undefined
    return v ? Either.right(v) : Either.left(`expected a GPU vendor nvidia, amd, google (or tpu) or intel, got ${show(input)}`)
  },
  (v) => v
).annotations({ identifier: "GPUVendor", description: "`nvidia`, `amd`, `google` (alias `tpu`) or `intel`." })
export type GPUVendor = "nvidia" | "amd" | "google" | "intel"

const GPU_VENDOR_ALIASES: Record<string, GPUVendor> = {
  nvidia: "nvidia",
  amd: "amd",
  google: "google",
  tpu: "google",
  intel: "intel"
}

const GPU_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.+\-]*$/

const parseGpuNames = (input: unknown): Either.Either<ReadonlyArray<string>, string> => {
  const list = typeof input === "string" ? input.split(",").map((s) => s.trim()) : input
  if (!Array.isArray(list) || list.length === 0) {
    return Either.left(`expected a GPU name or a list of names such as A100 or [A100, H100], got ${show(input)}`)
  }
  for (const name of list) {
    if (typeof name !== "string" || !GPU_NAME_RE.test(name)) {
      return Either.left(`expected GPU names made of letters, digits, '-', '_', '.', got ${show(name)}`)
    }
  }
  return Either.right(list as ReadonlyArray<string>)
}

const GPUNames = scalar(Schema.Array(Schema.String), parseGpuNames, (names) => names as ReadonlyArray<string>).annotations({
  identifier: "GPUNames"
})

const parseComputeCapability = (input: unknown): Either.Either<string, string> => {
  const s = typeof input === "number" ? String(input) : input
  return typeof s === "string" && /^\d+(\.\d+)?$/.test(s.trim())
    ? Either.right(s.includes(".") ? s.trim() : `${s.trim()}.0`)
    : Either.left(`expected a compute capability such as 7.5 or 8.0, got ${show(input)}`)
}

const ComputeCapability = scalar(Schema.String, parseComputeCapability, (s) => s).annotations({
  identifier: "ComputeCapability"
})

const GPU_EXPECTED =
  "GPU requirements as colon-separated vendor, names, memory and count, such as A100:80GB:2, H100,A100:1..4, amd:MI300X or 24GB..80GB"

const DEFAULT_GPU_COUNT: Range = { min: 1, max: 1 }

const parseGpu = (input: string | number): Either.Either<GPUSpec, string> => {
  if (typeof input === "number") return Either.map(parseRange(input, parseCount, GPU_EXPECTED), (count) => ({ count }))
  const spec: { vendor?: GPUVendor; name?: ReadonlyArray<string>; count?: Range; memory?: Range } = {}
  const twice = (what: string) => Either.left(`gpu: ${what} is given twice in ${show(input)}`)
  for (const raw of input.split(":")) {
    const token = raw.trim()
    if (token === "") return Either.left(`expected ${GPU_EXPECTED}, got ${show(input)} (empty part)`)
    const vendor = GPU_VENDOR_ALIASES[token.toLowerCase()]
    if (vendor !== undefined) {
      if (spec.vendor !== undefined) return twice("the vendor")
      spec.vendor = vendor
      continue
    }
    const count = parseRange(token, parseCount, GPU_EXPECTED)
    if (Either.isRight(count)) {
      if (spec.count !== undefined) return twice("the count")
      spec.count = count.right
      continue
    }
    const memory = /[mgt]b/i.test(token) ? parseRange(token, parseMemory, GPU_EXPECTED) : undefined
    if (memory !== undefined && Either.isRight(memory)) {
      if (spec.memory !== undefined) return twice("the memory")
      spec.memory = memory.right
      continue
    }
    const names = parseGpuNames(token)
    if (Either.isLeft(names)) return Either.left(`expected ${GPU_EXPECTED}, got ${show(input)} (cannot read ${show(token)})`)
    if (spec.name !== undefined) {
      return Either.left(`expected ${GPU_EXPECTED}, got ${show(input)} (cannot read ${show(token)}: the GPU names were already given)`)
    }
    spec.name = names.right
  }
  return Either.right({ ...spec, count: spec.count ?? DEFAULT_GPU_COUNT })
}

/**
 * GPU requirements. YAML: `A100`, `A100:80GB:2`, `H100,A100:1..4`, `amd:MI300X`, `24GB..80GB`,
 * `2`, or the object form with `vendor`, `name`, `count`, `memory`, `total_memory`,
 * `compute_capability`.
 */
/** The object form of `gpu`. */
export const GPUSpecObject = Schema.Struct({
    vendor: Schema.optionalWith(GPUVendor, { exact: true }).annotations({
      description: "The vendor: `nvidia`, `amd`, `google` (alias `tpu`) or `intel`."
    }),
    name: Schema.optionalWith(GPUNames, { exact: true }).annotations({
      description: "The GPU name or a list of acceptable names (`A100`, `[A100, H100]`)."
    }),
    count: Schema.optionalWith(IntRange, { default: () => DEFAULT_GPU_COUNT }).annotations({
      description: "The number of GPUs (a number or a range). Defaults to `1`."
    }),
    memory: Schema.optionalWith(MemoryRange, { exact: true }).annotations({
      description: "The memory of each GPU, a size or range (`24GB`, `24GB..80GB`)."
    }),
    totalMemory: Schema.optionalWith(MemoryRange, { exact: true })
      .annotations({ description: "The memory of all GPUs together, a size or range (`80GB..`)." })
      .pipe(Schema.fromKey("total_memory")),
    computeCapability: Schema.optionalWith(ComputeCapability, { exact: true })
      .annotations({ description: "The minimum compute capability (NVIDIA), such as `7.5`." })
      .pipe(Schema.fromKey("compute_capability"))
  })

export const GPUSpec = withShorthand(
  GPUSpecObject,
  parseGpu,
  GPU_EXPECTED
).annotations({
  identifier: "GPUSpec",
  description:
    "GPUs: colon-separated vendor, names, memory and count (`A100:80GB:2`, `H100,A100:1..4`, `amd:MI300X`, `24GB..80GB`), or the object form."
})
export interface GPUSpec {
  readonly vendor?: GPUVendor
  readonly name?: ReadonlyArray<string>
  readonly count: Range
  readonly memory?: Range
  readonly totalMemory?: Range
  readonly computeCapability?: string
}
export type GPUSpecEncoded = typeof GPUSpec.Encoded

// ---------------------------------------------------------------------------------------------
// Disk

const DISK_EXPECTED = "a disk size or range such as 100GB, 100GB.. or 50GB..200GB"

/** Disk requirements: `{size}`; YAML shorthand `100GB..`. */
/** The object form of `disk`. */
export const DiskSpecObject = Schema.Struct({
  size: Schema.propertySignature(MemoryRange).annotations({ description: "The disk size, a size or range (`100GB..`)." })
})

export const DiskSpec = withShorthand(
  DiskSpecObject,
  (input) =>
    Either.map(parseRange(input, parseMemory, DISK_EXPECTED), (size) => ({
      size
    })),
  DISK_EXPECTED
).annotations({ identifier: "DiskSpec", description: "The disk size: `100GB..` or `{size}`." })
export interface DiskSpec {
  readonly size: Range
}

// ---------------------------------------------------------------------------------------------
// Resources

export const DEFAULT_RESOURCES: ResourcesSpec = {
  cpu: { count: { min: 2 } },
  memory: { min: 8 },
  gpu: { count: { min: 0 } },
  disk: { size: { min: 100 } }
}

/** The resource requirements (`resources:`); every key is optional and has a default. */
export const ResourcesSpec = Schema.Struct({
  cpu: Schema.optionalWith(CPUSpec, { default: () => DEFAULT_RESOURCES.cpu }).annotations({
    description: "CPU cores: `4`, `2..`, `arm:8`, `x86:4..` or `{arch, count}`. Defaults to `2..`."
  }),
  memory: Schema.optionalWith(MemoryRange, { default: () => DEFAULT_RESOURCES.memory }).annotations({
    description: "RAM, a size or range (`8GB..`, `16GB..64GB`). Defaults to `8GB..`."
  }),
  shmSize: Schema.optionalWith(Memory, { exact: true })
    .annotations({
      description: "Shared memory size (`/dev/shm`), such as `8GB`; raise it for parallel data loaders (e.g. PyTorch)."
    })
    .pipe(Schema.fromKey("shm_size")),
  gpu: Schema.optionalWith(GPUSpec, { default: () => DEFAULT_RESOURCES.gpu }).annotations({
    description: "GPUs: `A100:80GB:2`, `H100,A100:1..4`, `amd:MI300X`, `24GB..80GB` or the object form. Defaults to `0..` (none needed)."
  }),
  disk: Schema.optionalWith(DiskSpec, { default: () => DEFAULT_RESOURCES.disk }).annotations({
    description: "Disk size: `100GB..` or `{size}`. Defaults to `100GB..`."
  })
}).annotations({ identifier: "ResourcesSpec", description: "The resources a run or fleet needs." })
export interface ResourcesSpec {
  readonly cpu: CPUSpec
  readonly memory: Range
  readonly shmSize?: number
  readonly gpu: GPUSpec
  readonly disk: DiskSpec
}
export type ResourcesSpecEncoded = typeof ResourcesSpec.Encoded

// ---------------------------------------------------------------------------------------------
// Matching an instance

/** The resources of an instance as offers describe them (upstream `memory_mib`, `size_mib`). */
export interface InstanceResourcesView {
  readonly cpus: number
  readonly memoryMib: number
  readonly gpus: ReadonlyArray<{ readonly name: string; readonly memoryMib: number; readonly vendor?: string }>
  readonly disk?: { readonly sizeMib: number }
  readonly cpuArch?: string
}

/** The outcome of `matchResources`: a match, or the unmet requirements in plain words. */
export type ResourcesMatch =
  | { readonly _tag: "Match" }
  | { readonly _tag: "Mismatch"; readonly unmet: ReadonlyArray<string> }

const gb = (mib: number) => mib / 1024
const fmtGb = (n: number) => formatMemory(Math.round(n * 100) / 100)

const describeGpuNeed = (gpu: GPUSpec): string => {
  const what = gpu.name?.join(" or ") ?? (gpu.vendor ? `${gpu.vendor} GPU` : "GPU")
  const parts = [`${describeRange(gpu.count)}× ${what}`]
  if (gpu.memory) parts.push(`with ${describeRange(gpu.memory, formatMemory)}`)
  if (gpu.totalMemory) parts.push(`${describeRange(gpu.totalMemory, formatMemory)} in total`)
  if (gpu.computeCapability) parts.push(`compute capability ≥${gpu.computeCapability}`)
  return parts.join(" ")
}

const describeGpus = (gpus: InstanceResourcesView["gpus"]): string => {
  if (gpus.length === 0) return "0 GPUs"
  const groups = new Map<string, number>()
  for (const g of gpus) {
    const key = `${g.name} (${fmtGb(gb(g.memoryMib))})`
    groups.set(key, (groups.get(key) ?? 0) + 1)
  }
  return [...groups].map(([k, n]) => `${n}× ${k}`).join(", ")
}

/**
 * Checks an instance's resources against a requirement. Pure; planning uses the `unmet`
 * sentences to tell the user why an offer was left out.
 * @example
 * matchResources(spec, { cpus: 4, memoryMib: 16384, gpus: [], disk: { sizeMib: 204800 } })
 * // { _tag: "Mismatch", unmet: ["gpu: needs 2× A100 with 80GB, instance has 0 GPUs"] }
 */
export const matchResources = (spec: ResourcesSpec, instance: InstanceResourcesView): ResourcesMatch => {
  const unmet: Array<string> = []
  if (!isInRange(spec.cpu.count, instance.cpus)) {
    unmet.push(`cpu: needs ${describeRange(spec.cpu.count)} cores, instance has ${instance.cpus}`)
  }
  if (spec.cpu.arch !== undefined && instance.cpuArch !== undefined) {
    const arch = CPU_ARCH_ALIASES[instance.cpuArch.toLowerCase()] ?? instance.cpuArch
    if (arch !== spec.cpu.arch) unmet.push(`cpu: needs ${spec.cpu.arch} architecture, instance is ${arch}`)
  }
  if (!isInRange(spec.memory, gb(instance.memoryMib))) {
    unmet.push(`memory: needs ${describeRange(spec.memory, formatMemory)}, instance has ${fmtGb(gb(instance.memoryMib))}`)
  }
  const gpu = spec.gpu
  const filtered = gpu.vendor !== undefined || gpu.name !== undefined || gpu.memory !== undefined
  const names = gpu.name?.map((n) => n.toLowerCase())
  const matching = instance.gpus.filter(
    (g) =>
      (gpu.vendor === undefined || (g.vendor ?? "nvidia").toLowerCase() === gpu.vendor) &&
      (names === undefined || names.includes(g.name.toLowerCase())) &&
      (gpu.memory === undefined || isInRange(gpu.memory, gb(g.memoryMib)))
  )
  const counted = filtered ? matching : instance.gpus
  const totalGb = counted.reduce((sum, g) => sum + gb(g.memoryMib), 0)
  if (!isInRange(gpu.count, counted.length) || (gpu.totalMemory !== undefined && !isInRange(gpu.totalMemory, totalGb))) {
    unmet.push(`gpu: needs ${describeGpuNeed(gpu)}, instance has ${describeGpus(instance.gpus)}`)
  }
  if (instance.disk !== undefined && !isInRange(spec.disk.size, gb(instance.disk.sizeMib))) {
    unmet.push(`disk: needs ${describeRange(spec.disk.size, formatMemory)}, instance has ${fmtGb(gb(instance.disk.sizeMib))}`)
  }
  return unmet.length === 0 ? { _tag: "Match" } : { _tag: "Mismatch", unmet }
}
