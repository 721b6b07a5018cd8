// `dstack apply`'s command-line overrides, with upstream dstack's names, short flags and value
// formats (its profile, fleets, spot and retry groups, `-e/--env` and `--cpu/--gpu/--memory/
// --disk`). Each one sets a configuration key before the plan is asked for, so the plan shows it;
// its value is read by the configuration's own schema (the same formats as in the YAML file), and
// a key this build does not carry out is refused naming the argument, as the file's key would be.
import { Either, ParseResult, Schema } from "effect"
import { parseArgs } from "node:util"
import type { AnyConfiguration } from "@dstack-ts/core"
import { CliError, usageError } from "./context.ts"

type Kind = "string" | "boolean"

/** One override: its flags, what it takes, the group it is listed under, and its help line. */
interface OverrideDef {
  readonly kind: Kind
  readonly short?: string
  readonly multiple?: boolean
  readonly hint?: string
  readonly description: string
}

/**
 * The arguments, by long name, in upstream's order. All apply to run configurations (task,
 * service, dev-environment) only: upstream's fleet configurator takes none of them.
 */
export const RUN_OVERRIDES = {
  env: { kind: "string", short: "e", multiple: true, hint: "KEY[=VALUE]", description: "An environment variable (repeatable): `KEY=VALUE`, or `KEY` to take the value from the local environment; merged into `env`" },
  cpu: { kind: "string", hint: "SPEC", description: "Request CPU for the run: `ARCH:COUNT` (all parts optional), as `resources.cpu`" },
  gpu: { kind: "string", hint: "SPEC", description: "Request GPU for the run: `NAME:COUNT:MEMORY` (all parts optional), as `resources.gpu`" },
  memory: { kind: "string", hint: "RANGE", description: "Request the size range of RAM for the run (`128GB..256GB`), as `resources.memory`" },
  disk: { kind: "string", hint: "RANGE", description: "Request the size range of disk for the run (`100GB..`), as `resources.disk`" },
  "max-price": { kind: "string", hint: "PRICE", description: "The maximum price per hour, in dollars (`max_price`)" },
  "max-duration": { kind: "string", hint: "DURATION", description: "The maximum duration of the run (`2h`, `1d`, `off`; `max_duration`)" },
  backend: { kind: "string", short: "b", multiple: true, hint: "NAME", description: "A backend to try for provisioning (repeatable; replaces `backends`)" },
  region: { kind: "string", short: "r", multiple: true, hint: "NAME", description: "A region to try for provisioning (repeatable; replaces `regions`)" },
  "instance-type": { kind: "string", multiple: true, hint: "NAME", description: "A cloud-specific instance type to try (repeatable; replaces `instance_types`)" },
  fleet: { kind: "string", multiple: true, hint: "NAME", description: "Consider only this fleet (repeatable; replaces `fleets`)" },
  reuse: { kind: "boolean", short: "R", description: "Reuse an existing instance from a fleet, do not provision a new one (`creation_policy: reuse`, not supported yet: refused)" },
  "dont-destroy": { kind: "boolean", description: "Do not destroy the instance after the run is finished (`idle_duration: off`)" },
  "idle-duration": { kind: "string", hint: "DURATION", description: "Time to wait before destroying the idle instance (`idle_duration`)" },
  spot: { kind: "boolean", description: "Consider only spot instances (`spot_policy: spot`)" },
  "on-demand": { kind: "boolean", description: "Consider only on-demand instances (`spot_policy: on-demand`)" },
  "spot-auto": { kind: "boolean", description: "Consider both spot and on-demand instances (`spot_policy: auto`)" },
  "spot-policy": { kind: "string", hint: "POLICY", description: "One of `spot`, `on-demand`, `auto` (`spot_policy`)" },
  retry: { kind: "boolean", description: "Resubmit the run on failure (`retry: true`)" },
  "no-retry": { kind: "boolean", description: "Do not resubmit the run on failure (`retry: false`)" },
  "retry-duration": { kind: "string", hint: "DURATION", description: "Resubmit the run on failure for this long (`retry: {duration}`)" }
} as const satisfies Record<string, OverrideDef>

type OverrideName = keyof typeof RUN_OVERRIDES

/** Upstream's mutually exclusive groups: at most one of each may be given. */
const EXCLUSIVE: ReadonlyArray<ReadonlyArray<OverrideName>> = [
  ["reuse", "dont-destroy", "idle-duration"],
  ["spot", "on-demand", "spot-auto", "spot-policy"],
  ["retry", "no-retry", "retry-duration"]
]

/** The overrides as citty arguments: listed by `dstack apply --help` and in docs/cli.md. */
export const overrideArgs = Object.fromEntries(
  Object.entries(RUN_OVERRIDES).map(([name, d]: [string, OverrideDef]) => [
    name,
    {
      type: d.kind,
      description: d.description,
      ...(d.short === undefined ? {} : { alias: d.short }),
      ...(d.hint === undefined ? {} : { valueHint: d.hint })
    }
  ])
) as { [K in OverrideName]: { type: (typeof RUN_OVERRIDES)[K]["kind"]; description: string; alias?: string; valueHint?: string } }

/** One key set by an argument: the argument as the user typed it, and the YAML path it sets. */
export interface Override {
  readonly arg: string
  readonly path: ReadonlyArray<string>
  readonly value: unknown
}

const flag = (name: OverrideName): string => {
  const d: OverrideDef = RUN_OVERRIDES[name]
  return d.short === undefined ? `--${name}` : `-${d.short}/--${name}`
}

const ENV_RE = /^([a-zA-Z_][a-zA-Z0-9_]*)(=.*)?$/s

/**
 * Reads `dstack apply`'s arguments (`rawArgs`, after the command name) with Node's strict
 * parser, which citty is not: repeatable flags keep every value, and an argument this command
 * does not know is refused rather than dropped.
 */
export const parseApplyArgs = (
  rawArgs: ReadonlyArray<string>,
  known: Record<string, { readonly type: string; readonly alias?: string | ReadonlyArray<string> }>
): Record<string, string | boolean | ReadonlyArray<string> | undefined> => {
  const options: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = {}
  for (const [name, def] of Object.entries(known)) {
    if (def.type !== "string" && def.type !== "boolean") continue
    const alias = Array.isArray(def.alias) ? def.alias[0] : def.alias
    const over: OverrideDef | undefined = (RUN_OVERRIDES as Record<string, OverrideDef>)[name]
    options[name] = {
      type: def.type,
      ...(typeof alias === "string" && alias.length === 1 ? { short: alias } : {}),
      ...(over?.multiple === true ? { multiple: true } : {})
    }
  }
  try {
    return parseArgs({ args: [...rawArgs], options, strict: true, allowPositionals: false }).values as Record<string, string | boolean | ReadonlyArray<string> | undefined>
  } catch (error) {
    // Node's messages name the argument ("Unknown option '--bogus'", "Option '--max-price <value>' argument missing").
    throw usageError(`Unrecognized arguments: ${(error as Error).message.split(". ")[0]}`)
  }
}

/**
 * The overrides given, as YAML paths and values (the file's own formats), in upstream's merge
 * order: an argument replaces the file's key, a repeatable one replaces its list, `-e` merges
 * into `env`. Refuses mutually exclusive arguments, a run-only one for a fleet, a bad
 * `--max-price` or `-e` value, and `-e KEY` when KEY is not set locally.
 */
export const collectOverrides = (
  values: Record<string, unknown>,
  type: AnyConfiguration["type"],
  environment: Record<string, string | undefined> = process.env
): ReadonlyArray<Override> => {
  const given = (Object.keys(RUN_OVERRIDES) as Array<OverrideName>).filter((name) => {
    const v = values[name]
    return v !== undefined && v !== false && !(Array.isArray(v) && v.length === 0)
  })
  if (given.length === 0) return []
  if (type === "fleet") {
    throw usageError(`Unrecognized arguments for a fleet configuration: ${given.map(flag).join(", ")} (as upstream, a fleet takes only -n/--name; they apply to task, service and dev-environment)`)
  }
  for (const group of EXCLUSIVE) {
    const both = group.filter((name) => given.includes(name))
    if (both.length > 1) throw usageError(`argument ${flag(both[1])}: not allowed with argument ${flag(both[0])}`)
  }
  const str = (name: OverrideName) => values[name] as string
  const list = (name: OverrideName) => values[name] as ReadonlyArray<string>
  const out: Array<Override> = []
  const set = (name: OverrideName, path: ReadonlyArray<string>, value: unknown) => out.push({ arg: flag(name), path, value })
  for (const name of given) {
    switch (name) {
      case "env":
        for (const entry of list("env")) {
          const m = ENV_RE.exec(entry)
          if (m === null) throw usageError(`argument -e/--env: expected KEY=VALUE or KEY (KEY: letters, digits and _, not starting with a digit), got ${JSON.stringify(entry)}`)
          const key = m[1]
          const value = m[2]?.slice(1) ?? environment[key]
          if (value === undefined) {
            throw usageError(`argument -e/--env: ${key} is not set in the local environment (give -e ${key}=VALUE)`)
          }
          out.push({ arg: `-e ${key}`, path: ["env", key], value })
        }
        break
      case "cpu":
      case "gpu":
      case "memory":
      case "disk":
        set(name, ["resources", name], str(name))
        break
      case "max-price": {
        const price = Number(str(name))
        if (str(name).trim() === "" || !Number.isFinite(price)) throw usageError(`argument --max-price: expected a price in dollars per hour (a number such as 0.5), got ${JSON.stringify(str(name))}`)
        set(name, ["max_price"], price)
        break
      }
      case "max-duration":
        set(name, ["max_duration"], str(name))
        break
      case "backend":
        set(name, ["backends"], list(name))
        break
      case "region":
        set(name, ["regions"], list(name))
        break
      case "instance-type":
        set(name, ["instance_types"], list(name))
        break
      case "fleet":
        set(name, ["fleets"], list(name))
        break
      case "reuse":
        set(name, ["creation_policy"], "reuse")
        break
      case "dont-destroy":
        set(name, ["idle_duration"], "off")
        break
      case "idle-duration":
        set(name, ["idle_duration"], str(name))
        break
      case "spot":
        set(name, ["spot_policy"], "spot")
        break
      case "on-demand":
        set(name, ["spot_policy"], "on-demand")
        break
      case "spot-auto":
        set(name, ["spot_policy"], "auto")
        break
      case "spot-policy":
        set(name, ["spot_policy"], str(name))
        break
      case "retry":
        set(name, ["retry"], true)
        break
      case "no-retry":
        set(name, ["retry"], false)
        break
      case "retry-duration":
        set(name, ["retry"], { duration: str(name) })
        break
    }
  }
  return out
}

const related = (a: ReadonlyArray<PropertyKey>, b: ReadonlyArray<PropertyKey>) =>
  a.slice(0, Math.min(a.length, b.length)).every((k, i) => k === b[i])

const plainWords = (message: string): string => message.replace(/^Expected (.*), actual (.*)$/s, "expected $1, got $2")

/**
 * The configuration with the overrides set: its YAML form (the schema's encoding) gets each
 * key, and is read again by the same schema and checked by `unsupported` (the loader's
 * `supportedOnly` rules), so an argument is held to what the file's key would be. A problem is
 * reported naming the argument that caused it.
 */
export const applyOverrides = (
  schema: Schema.Schema<AnyConfiguration, unknown>,
  configuration: AnyConfiguration,
  overrides: ReadonlyArray<Override>,
  unsupported: (c: AnyConfiguration) => ReadonlyArray<{ readonly path: ReadonlyArray<string | number>; readonly message: string }>
): AnyConfiguration => {
  if (overrides.length === 0) return configuration
  const raw = structuredClone(Schema.encodeSync(schema)(configuration)) as Record<string, unknown>
  for (const { path, value } of overrides) {
    let at = raw
    for (const key of path.slice(0, -1)) {
      const next = at[key]
      at = (at[key] = typeof next === "object" && next !== null && !Array.isArray(next) ? next : {}) as Record<string, unknown>
    }
    at[path[path.length - 1]] = value
  }
  const who = (path: ReadonlyArray<PropertyKey>) => {
    const args = [...new Set(overrides.filter((o) => related(o.path, path)).map((o) => o.arg))]
    return args.length > 0 ? `argument ${args.join(", ")}` : `with the arguments ${[...new Set(overrides.map((o) => o.arg))].join(", ")}`
  }
  const decoded = Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "error" })(raw)
  if (Either.isLeft(decoded)) {
    const all = ParseResult.ArrayFormatter.formatErrorSync(decoded.left)
    // An optional key's "or undefined" branch only repeats the real failure (as the loader drops it).
    const issues = all.filter((i) => !(i.message.startsWith("Expected undefined") && all.some((o) => o !== i && related(o.path, i.path) && !o.message.startsWith("Expected undefined"))))
    throw usageError(issues.map((i) => `${who(i.path)}: ${plainWords(i.message)}`).filter((l, i, all) => all.indexOf(l) === i).join("\n"))
  }
  const refused = unsupported(decoded.right)
  if (refused.length > 0) throw new CliError(refused.map((k) => `${who(k.path)}: ${k.message}`).join("\n"))
  return decoded.right
}
