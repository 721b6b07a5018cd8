// The run plan's properties, as upstream's plan lists them: what the server was asked to plan
// (the configuration with the command-line overrides set), one `NAME  value` row each. Keys
// left at their defaults are not listed, except the resources and the spot policy.
import { formatDuration, formatMemory, formatRange, type AnyConfiguration } from "@dstack-ts/core"

type RunConfiguration = Exclude<AnyConfiguration, { type: "fleet" }>

const durationOrOff = (d: number | "off") => (d === "off" ? "off" : formatDuration(d))

/** Resources as the YAML writes them: `cpu=2.. memory=8GB.. disk=100GB.. gpu=A100:2`. */
export const formatResources = (r: RunConfiguration["resources"]): string => {
  const gpu = r.gpu
  const gpuParts = [
    ...(gpu.vendor !== undefined ? [gpu.vendor] : []),
    ...(gpu.name !== undefined && gpu.name.length > 0 ? [gpu.name.join(",")] : []),
    ...(gpu.memory !== undefined ? [formatRange(gpu.memory, formatMemory)] : []),
    formatRange(gpu.count)
  ]
  return [
    `cpu=${r.cpu.arch !== undefined ? `${r.cpu.arch}:` : ""}${formatRange(r.cpu.count)}`,
    `memory=${formatRange(r.memory, formatMemory)}`,
    `disk=${formatRange(r.disk.size, formatMemory)}`,
    ...(gpu.count.max === 0 || (gpu.count.min === 0 && gpu.name === undefined && gpu.memory === undefined && gpu.vendor === undefined) ? [] : [`gpu=${gpuParts.join(":")}`])
  ].join(" ")
}

/** The rows: `[name, value]`. */
export const planProperties = (c: RunConfiguration): Array<[string, string]> => {
  const rows: Array<[string, string]> = [
    ["Resources", formatResources(c.resources)],
    ["Spot policy", c.spotPolicy ?? "on-demand"]
  ]
  if (c.maxPrice !== undefined) rows.push(["Max price", `$${c.maxPrice}`])
  if (c.maxDuration !== undefined) rows.push(["Max duration", durationOrOff(c.maxDuration)])
  if (c.idleDuration !== undefined) rows.push(["Idle duration", durationOrOff(c.idleDuration)])
  if (c.retry !== undefined) rows.push(["Retry", c.retry.onEvents.length === 0 ? "no" : `${c.retry.onEvents.join(", ")} for ${formatDuration(c.retry.duration)}`])
  if (c.creationPolicy !== undefined) rows.push(["Creation policy", c.creationPolicy])
  if (c.backends !== undefined) rows.push(["Backends", c.backends.join(", ")])
  if (c.regions !== undefined) rows.push(["Regions", c.regions.join(", ")])
  if (c.instanceTypes !== undefined) rows.push(["Instance types", c.instanceTypes.join(", ")])
  if (c.fleets !== undefined) rows.push(["Fleets", c.fleets.join(", ")])
  // Names only: values may be secrets.
  if (c.env !== undefined && Object.keys(c.env).length > 0) rows.push(["Env", Object.keys(c.env).join(", ")])
  return rows
}
