/**
 * GPU memory and utilisation read from nvidia-smi when it is installed, for the runner's
 * metrics (a job's CPU and memory come from its executor).
 */
import { execFile } from "node:child_process"
import { Effect } from "effect"

/** Usage of one GPU, with the upstream metric names. */
export interface GpuUsage {
  readonly gpu_memory_usage_bytes: number
  readonly gpu_util_percent: number
}

/** GPU usage from nvidia-smi; an empty list when it is missing or fails. */
export const nvidiaGpuUsage: Effect.Effect<ReadonlyArray<GpuUsage>> = Effect.async((resume) => {
  execFile(
    "nvidia-smi",
    ["--query-gpu=memory.used,utilization.gpu", "--format=csv,noheader,nounits"],
    { timeout: 5_000 },
    (err, stdout) => {
      if (err) return resume(Effect.succeed([]))
      const gpus = stdout
        .split("\n")
        .map((line) => line.split(",").map((s) => Number(s.trim())))
        .filter((parts) => parts.length === 2 && parts.every(Number.isFinite))
        .map(([memoryMib, util]) => ({ gpu_memory_usage_bytes: memoryMib * 1024 * 1024, gpu_util_percent: util }))
      resume(Effect.succeed(gpus))
    }
  )
})
