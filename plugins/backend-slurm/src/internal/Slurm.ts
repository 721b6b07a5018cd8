/**
 * What the Slurm commands print and what it means to dstack: `scontrol show -o node|partition`
 * lines as key/value records, GRES GPU counts, `--time` from seconds, and Slurm job states and
 * reasons as dstack job statuses and termination reasons. Pure functions, no I/O.
 */
import type { JobStatus, JobTerminationReason } from "@dstack-ts/core"

/** One `scontrol show -o` line as its keys (as Slurm spells them) and values. */
export const parseScontrolLine = (line: string): Record<string, string> => {
  const out: Record<string, string> = {}
  const keys = [...line.matchAll(/(?:^|\s)([A-Za-z_][A-Za-z0-9_.]*)=/g)]
  keys.forEach((m, i) => {
    const start = m.index! + m[0].length
    const end = i + 1 < keys.length ? keys[i + 1].index! : line.length
    out[m[1]] = line.slice(start, end).trim()
  })
  return out
}

/** A compute node as `scontrol show -o node` describes it. */
export interface SlurmNode {
  readonly name: string
  /** The address slurmctld reaches the node at (NodeAddr, else NodeHostname, else the name). */
  readonly address: string
  readonly cpus: number
  readonly memoryMib: number
  /** TmpDisk in MiB (0 when the node does not declare it). */
  readonly tmpDiskMib: number
  readonly gpus: number
  readonly arch?: string
  readonly partitions: ReadonlyArray<string>
  /** The node's state, e.g. IDLE, MIXED, ALLOCATED, DOWN+NOT_RESPONDING, IDLE+DRAIN. */
  readonly state: string
}

/** A partition as `scontrol show -o partition` describes it. */
export interface SlurmPartition {
  readonly name: string
  /** MaxTime in seconds; undefined for UNLIMITED. */
  readonly maxTimeSeconds?: number
  readonly up: boolean
  readonly isDefault: boolean
  /** TotalNodes: how many nodes the partition has, when scontrol says. */
  readonly totalNodes?: number
  /** MaxNodes: the most nodes one job may have there; undefined for UNLIMITED. */
  readonly maxNodes?: number
}

const int = (value: string | undefined, what: string, node: string): number => {
  const n = Number(value)
  if (value === undefined || value === "" || !Number.isFinite(n)) throw new Error(`node ${node}: ${what} is ${JSON.stringify(value)}, not a number`)
  return n
}

/** GPUs in a node's GRES (`gpu:4`, `gpu:a100:4(S:0-1)`, `gpu:a100:2,gpu:v100:1`). */
export const gresGpuCount = (gres: string): number =>
  gres.split(/,(?![^(]*\))/).map((g) => g.trim()).filter((g) => g.startsWith("gpu:")).reduce((sum, g) => {
    const parts = g.replace(/\(.*\)$/, "").split(":")
    const n = Number(parts[parts.length - 1])
    return sum + (Number.isInteger(n) ? n : 1)
  }, 0)

export const parseNode = (line: string): SlurmNode => {
  const r = parseScontrolLine(line)
  const name = r.NodeName
  if (!name) throw new Error(`a node line without NodeName: ${JSON.stringify(line.slice(0, 200))}`)
  const gres = r.Gres && r.Gres !== "(null)" ? r.Gres : ""
  const arch = r.Arch && r.Arch !== "(null)" ? r.Arch : undefined
  return {
    name,
    address: r.NodeAddr || r.NodeHostname || name,
    cpus: int(r.CPUEfctv ?? r.CPUTot, "CPUTot", name),
    memoryMib: int(r.RealMemory, "RealMemory", name),
    tmpDiskMib: Number(r.TmpDisk ?? 0) || 0,
    gpus: gresGpuCount(gres),
    ...(arch === undefined ? {} : { arch }),
    partitions: (r.Partitions && r.Partitions !== "(null)" ? r.Partitions : "").split(",").filter((p) => p !== ""),
    state: r.State ?? "UNKNOWN"
  }
}

/** Slurm time (`UNLIMITED`, `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`) in seconds. */
export const parseSlurmTime = (text: string): number | undefined => {
  if (text === "UNLIMITED" || text === "INFINITE" || text === "") return undefined
  const [days, rest] = text.includes("-") ? [Number(text.split("-")[0]), text.split("-")[1]] : [0, text]
  const parts = rest.split(":").map(Number)
  if (parts.some((p) => !Number.isFinite(p)) || !Number.isFinite(days)) return undefined
  if (text.includes("-")) {
    const [h = 0, m = 0, s = 0] = parts
    return ((days * 24 + h) * 60 + m) * 60 + s
  }
  if (parts.length === 1) return parts[0] * 60
  if (parts.length === 2) return parts[0] * 60 + parts[1]
  return (parts[0] * 60 + parts[1]) * 60 + parts[2]
}

export const parsePartition = (line: string): SlurmPartition => {
  const r = parseScontrolLine(line)
  if (!r.PartitionName) throw new Error(`a partition line without PartitionName: ${JSON.stringify(line.slice(0, 200))}`)
  const maxTime = parseSlurmTime(r.MaxTime ?? "UNLIMITED")
  const count = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined)
  const totalNodes = count(r.TotalNodes)
  const maxNodes = count(r.MaxNodes)
  return {
    name: r.PartitionName,
    ...(maxTime === undefined ? {} : { maxTimeSeconds: maxTime }),
    up: (r.State ?? "UP") === "UP",
    isDefault: r.Default === "YES",
    ...(totalNodes === undefined ? {} : { totalNodes }),
    ...(maxNodes === undefined ? {} : { maxNodes })
  }
}

/** `--time` in whole minutes (Slurm's resolution), rounded up: 90 s → `2`. */
export const slurmTimeLimit = (seconds: number): string => String(Math.max(1, Math.ceil(seconds / 60)))

/** Whether a node state lets the scheduler place jobs there. */
export const nodeUsable = (state: string): boolean => !/DOWN|DRAIN|FAIL|NOT_RESPONDING|POWER(ED|ING)_DOWN|MAINT|RESERVED/.test(state)

/** Slurm's job states that are final (the job left, or is leaving, the queue). */
export const FINAL_STATES = [
  "COMPLETED",
  "CANCELLED",
  "FAILED",
  "TIMEOUT",
  "PREEMPTED",
  "NODE_FAIL",
  "OUT_OF_MEMORY",
  "BOOT_FAIL",
  "DEADLINE",
  "REVOKED",
  "SPECIAL_EXIT"
] as const

/** How a Slurm job state reads as a dstack job: its status, and for an ended job the termination reason. */
export interface StateMeaning {
  readonly status: JobStatus
  readonly terminationReason?: JobTerminationReason
  /** The Slurm state, and the reason when it has one, in words for `dstack ps -v`. */
  readonly message: string
}

/**
 * A Slurm job state (and `%r` reason) as dstack sees it: PENDING is provisioning with Slurm's
 * reason (Resources, Priority, QOSMaxJobsPerUserLimit …); TIMEOUT is max_duration_exceeded
 * (the allocation's `--time` is the job's max_duration); PREEMPTED is an interruption;
 * NODE_FAIL and BOOT_FAIL make the instance unreachable; OUT_OF_MEMORY is a container exit
 * with an error (as upstream's OOM kill).
 */
export const stateMeaning = (state: string, reason = ""): StateMeaning => {
  const base = state.split(/\s|\+/)[0].toUpperCase()
  const why = reason && reason !== "None" ? ` (${reason})` : ""
  const message = `Slurm ${base}${why}`
  switch (base) {
    case "PENDING":
    case "CONFIGURING":
    case "REQUEUED":
    case "REQUEUE_HOLD":
    case "REQUEUE_FED":
    case "RESV_DEL_HOLD":
    case "SUSPENDED":
      return { status: "provisioning", message }
    case "RUNNING":
    case "RESIZING":
    case "SIGNALING":
    case "STAGE_OUT":
      return { status: "running", message }
    case "COMPLETING":
      return { status: "terminating", message }
    case "COMPLETED":
      return { status: "done", terminationReason: "done_by_runner", message }
    case "CANCELLED":
      return { status: "terminated", terminationReason: "terminated_by_user", message }
    case "TIMEOUT":
    case "DEADLINE":
      return { status: "terminated", terminationReason: "max_duration_exceeded", message }
    case "PREEMPTED":
      return { status: "failed", terminationReason: "interrupted_by_no_capacity", message }
    case "NODE_FAIL":
    case "BOOT_FAIL":
      return { status: "failed", terminationReason: "instance_unreachable", message }
    case "OUT_OF_MEMORY":
      return { status: "failed", terminationReason: "container_exited_with_error", message: `${message}: the job ran out of memory` }
    case "REVOKED":
      return { status: "failed", terminationReason: "failed_to_start_due_to_no_capacity", message }
    default:
      return { status: "failed", terminationReason: "executor_error", message }
  }
}

/** A job name Slurm shows in `squeue` (letters, digits, `-_.`; at most 64 characters). */
export const slurmJobName = (instanceName: string): string => `dstack-${instanceName}`.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 64)
