/**
 * What a job without an image asks of the host itself: a Python version (`python: "3.11"`)
 * or the CUDA compiler (`nvcc: true`). With an image these pick the image upstream; without
 * one, the host must already have them, and a job that needs what the host lacks is refused
 * before it starts, saying what is missing.
 */
import { spawnSync } from "node:child_process"

export interface HostRequirements {
  readonly python?: string | undefined
  readonly nvcc?: boolean | undefined
}

/** Runs a command and returns its output, or undefined when it cannot run. */
export type Probe = (command: string, args: ReadonlyArray<string>) => string | undefined

export const probeCommand: Probe = (command, args) => {
  const result = spawnSync(command, [...args], { encoding: "utf8", timeout: 10_000 })
  if (result.error !== undefined || result.status !== 0) return undefined
  return `${result.stdout ?? ""}${result.stderr ?? ""}`
}

const versionOf = (output: string | undefined): string | undefined => /Python (\d+\.\d+)/.exec(output ?? "")?.[1]

/** Why the host cannot run the job, or undefined when it can. */
export const unmetHostRequirements = (req: HostRequirements, probe: Probe = probeCommand): string | undefined => {
  const problems: Array<string> = []
  if (req.python !== undefined) {
    const wanted = req.python
    const candidates = [`python${wanted}`, "python3", "python"]
    const found = candidates.map((c) => ({ command: c, version: versionOf(probe(c, ["--version"])) }))
    if (!found.some((f) => f.version === wanted)) {
      const seen = found.filter((f) => f.version !== undefined).map((f) => `${f.command} is ${f.version}`)
      problems.push(
        `python ${wanted} was requested but this host has ${seen.length > 0 ? seen.join(", ") : "no Python"}: ` +
          `install Python ${wanted} on the host, or set an image that has it`
      )
    }
  }
  if (req.nvcc === true && probe("nvcc", ["--version"]) === undefined) {
    problems.push("nvcc was requested but this host has no CUDA compiler (nvcc is not on PATH): install the CUDA toolkit, or set an image with nvcc")
  }
  return problems.length === 0 ? undefined : problems.join("; ")
}
