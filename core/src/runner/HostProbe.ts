/**
 * What this machine has: CPUs, memory, the disk of the work directory and NVIDIA GPUs (from
 * `nvidia-smi` when it is installed): what a machine offers to run jobs on (the local backend's
 * offer; a pool machine's report when it joins). `Runner.HostProbe` in core's exports.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"

const MIB = 1024 * 1024

export interface HostGpu {
  readonly name: string
  readonly memoryMib: number
}

export interface HostResources {
  readonly cpus: number
  readonly memoryMib: number
  readonly diskMib: number
  readonly gpus: ReadonlyArray<HostGpu>
  readonly cpuArch: "x86" | "arm" | undefined
  readonly hostname: string
}

/** `os.arch()` in the words of resource specs (`x86`, `arm`); other architectures are left out. */
export const cpuArchOf = (arch: string): "x86" | "arm" | undefined =>
  arch === "x64" || arch === "ia32" ? "x86" : arch === "arm64" || arch === "arm" ? "arm" : undefined

/**
 * The short GPU name requirements use (`H100`, `A100`, `RTX4090`) from what nvidia-smi
 * prints (`NVIDIA H100 80GB HBM3`, `NVIDIA A100-SXM4-80GB`, `NVIDIA GeForce RTX 4090`).
 */
export const gpuShortName = (full: string): string => {
  const words = full
    .trim()
    .split(/\s+/)
    .filter((w) => !/^(nvidia|tesla|geforce|quadro)$/i.test(w))
  if (words.length === 0) return full.trim()
  const first = words[0].split("-")[0]
  if (/^rtx$/i.test(first) && words.length > 1) return `RTX${words[1].split("-")[0]}`
  return first
}

/** Parses `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`. */
export const parseNvidiaSmi = (output: string): ReadonlyArray<HostGpu> =>
  output
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .flatMap((line) => {
      const comma = line.lastIndexOf(",")
      if (comma < 0) return []
      const memoryMib = Number(line.slice(comma + 1).trim())
      if (!Number.isFinite(memoryMib)) return []
      return [{ name: gpuShortName(line.slice(0, comma)), memoryMib }]
    })

/**
 * The GPUs `nvidiaSmi` reports, or none when the binary is missing or fails (a machine
 * without a working driver has no GPU to offer).
 */
export const detectGpus = (nvidiaSmi: string): Promise<ReadonlyArray<HostGpu>> =>
  new Promise((resolve) => {
    execFile(
      nvidiaSmi,
      ["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
      { timeout: 10_000 },
      (error, stdout) => resolve(error ? [] : parseNvidiaSmi(String(stdout)))
    )
  })

/** The size of the filesystem that holds `dir`, in MiB. */
export const diskSizeMib = (dir: string): Promise<number> =>
  new Promise((resolve, reject) => {
    fs.statfs(dir, (error, stats) => (error ? reject(error) : resolve(Math.floor((stats.blocks * stats.bsize) / MIB))))
  })

/** Probes this machine; `dir` must exist. */
export const probeHost = async (dir: string, nvidiaSmi: string): Promise<HostResources> => {
  const [diskMib, gpus] = await Promise.all([diskSizeMib(dir), detectGpus(nvidiaSmi)])
  return {
    cpus: os.cpus().length,
    memoryMib: Math.floor(os.totalmem() / MIB),
    diskMib,
    gpus,
    cpuArch: cpuArchOf(os.arch()),
    hostname: os.hostname()
  }
}
