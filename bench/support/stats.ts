// Small statistics and formatting helpers shared by every benchmark: percentiles over a list
// of samples, the machine description for the results header, and the rows of the table.
import * as os from "node:os"
import { execFileSync } from "node:child_process"

/** The load averages over 1, 5 and 15 minutes, as the bench logs them ("1.2 0.8 0.6"). */
export const loadAverage = (): string => os.loadavg().map((l) => l.toFixed(1)).join(" ")

/** The p-th percentile (0..100) of samples, nearest-rank; NaN when there are none. */
export const percentile = (samples: ReadonlyArray<number>, p: number): number => {
  if (samples.length === 0) return Number.NaN
  const sorted = [...samples].sort((a, b) => a - b)
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]!
}

export interface Summary {
  readonly n: number
  readonly p50: number
  readonly p99: number
}

export const summarize = (samples: ReadonlyArray<number>): Summary => ({ n: samples.length, p50: percentile(samples, 50), p99: percentile(samples, 99) })

/** A table row: what was measured, the system's figure, the baseline's and the target. */
export interface Row {
  readonly section: string
  readonly measure: string
  /** Unit of the figures, e.g. "ms", "req/s", "MB/s". */
  readonly unit: string
  readonly value?: Summary | number | undefined
  readonly baseline?: Summary | number | undefined
  /** "higher" when more is better (throughput), "lower" for latencies. */
  readonly better: "higher" | "lower"
  readonly target?: string
  /** ok / short / n/a, decided by the benchmark against the target. */
  readonly verdict?: "meets" | "short" | "n/a"
  readonly note?: string
  /** Set when the row could not be measured: the reason. */
  readonly notMeasured?: string
}

const fmtNum = (x: number): string => {
  if (!Number.isFinite(x)) return "–"
  const a = Math.abs(x)
  if (Number.isInteger(x)) return x.toLocaleString("en-US")
  if (a >= 1000) return Math.round(x).toLocaleString("en-US")
  if (a >= 100) return x.toFixed(0)
  if (a >= 10) return x.toFixed(1)
  return x.toFixed(2)
}

const fmtFig = (v: Summary | number | undefined): string => {
  if (v === undefined) return "–"
  if (typeof v === "number") return fmtNum(v)
  return `${fmtNum(v.p50)} / ${fmtNum(v.p99)}`
}

const central = (v: Summary | number | undefined): number => (v === undefined ? Number.NaN : typeof v === "number" ? v : v.p50)

/** system ÷ baseline on the central figure (p50 for latencies). */
export const ratio = (row: Row): string => {
  const a = central(row.value)
  const b = central(row.baseline)
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return "–"
  const r = a / b
  return `${r >= 0.1 ? r.toFixed(2) : r.toPrecision(2)}×`
}

export const markdownTable = (rows: ReadonlyArray<Row>): string => {
  const head = "| row | measure | dstack-ts (p50 / p99, or value) | baseline | ratio | target | verdict |\n| --- | --- | --- | --- | --- | --- | --- |"
  const lines = rows.map((r) => {
    if (r.notMeasured !== undefined) return `| ${r.section} | ${r.measure} | not measured yet | – | – | ${r.target ?? ""} | ${r.notMeasured} |`
    const unit = r.unit ? ` ${r.unit}` : ""
    const verdict = r.verdict === undefined ? "" : r.verdict === "meets" ? "meets" : r.verdict === "short" ? "**short**" : "n/a"
    return `| ${r.section} | ${r.measure}${r.note ? ` (${r.note})` : ""} | ${fmtFig(r.value)}${unit} | ${fmtFig(r.baseline)}${r.baseline === undefined ? "" : unit} | ${ratio(r)} | ${r.target ?? ""} | ${verdict} |`
  })
  return [head, ...lines].join("\n")
}

const versionOf = (file: string, args: ReadonlyArray<string>): string => {
  try {
    return execFileSync(file, [...args], { encoding: "utf8", timeout: 20_000 }).split("\n")[0]!.trim()
  } catch {
    return "not found"
  }
}

/** One line per fact about the machine the figures were taken on. */
export const machineHeader = (stateBackend: string): string => {
  const cpus = os.cpus()
  const deno = versionOf("node_modules/deno/deno", ["--version"]).replace(/^deno /, "")
  const docker = versionOf("docker", ["version", "--format", "{{.Server.Version}}"])
  return [
    `- date: ${new Date().toISOString()}`,
    `- machine: ${cpus.length} cores (${cpus[0]?.model ?? "?"}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB memory, ${os.platform()} ${os.release()}; **shared with other engineers' work while measured**`,
    `- runtimes: Node ${process.version}, Deno ${deno}, Docker Engine ${docker}`,
    `- state backend: ${stateBackend}`
  ].join("\n")
}

/** Milliseconds since an origin, high resolution. */
export const now = (): number => performance.now()

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
