// `dstack apply`'s upstream overrides in-process: the strict parse of repeatable flags, the keys
// each argument sets, and the refusals naming the argument (the real configuration schema and
// the loader's `supportedOnly` rules, as the command uses them).
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { AnyConfiguration, parseConfiguration, unsupportedKeys, type AnyConfiguration as Configuration } from "@dstack-ts/core"
import { applyOverrides, collectOverrides, overrideArgs, parseApplyArgs } from "../src/applyArgs.ts"
import { CliError } from "../src/context.ts"

const known = { file: { type: "string", alias: "f" }, yes: { type: "boolean", alias: "y" }, name: { type: "string", alias: "n" }, ...overrideArgs }
const task = Effect.runSync(parseConfiguration("type: task\ncommands: [echo]\nenv: [KEPT=1, SHARED=file]\nbackends: [aws]\n"))
const fleet = Effect.runSync(parseConfiguration("type: fleet\nname: f1\nssh_config:\n  user: u\n  hosts: [192.0.2.1]\n"))

const apply = (argv: ReadonlyArray<string>, configuration: Configuration = task, env: Record<string, string> = {}) =>
  applyOverrides(AnyConfiguration as never, configuration, collectOverrides(parseApplyArgs(argv, known), configuration.type, env), unsupportedKeys)

const failure = (f: () => unknown): CliError => {
  try {
    f()
  } catch (error) {
    if (error instanceof CliError) return error
    throw error
  }
  throw new Error("expected a CliError")
}

describe("dstack apply overrides", () => {
  it("keeps every value of a repeatable flag and refuses what apply does not take", () => {
    expect(parseApplyArgs(["-b", "local", "--backend", "aws", "-e", "A=1", "-e", "B=2", "-y"], known)).toMatchObject({ backend: ["local", "aws"], env: ["A=1", "B=2"], yes: true })
    expect(failure(() => parseApplyArgs(["--bogus"], known)).message).toMatch(/Unrecognized arguments: .*--bogus/)
    expect(failure(() => parseApplyArgs(["stray"], known)).message).toMatch(/Unrecognized arguments: .*stray/)
  })

  it("sets the keys as upstream merges them: lists replaced, -e merged into env, KEY from the local environment", () => {
    const c = apply(["-b", "local", "-b", "remote", "-r", "r1", "--instance-type", "t1", "--fleet", "f1", "--fleet", "f2", "--max-price", "0.5", "--max-duration", "2h",
      "--dont-destroy", "--spot", "--no-retry", "--gpu", "A100:2", "--memory", "8GB..", "-e", "SHARED=cli", "-e", "LOCAL"], task, { LOCAL: "from-shell" })
    if (c.type !== "task") throw new Error("a task")
    expect(c).toMatchObject({ backends: ["local", "remote"], regions: ["r1"], instanceTypes: ["t1"], fleets: ["f1", "f2"], maxPrice: 0.5, maxDuration: 7200, idleDuration: "off", spotPolicy: "spot" })
    expect(c.retry?.onEvents).toEqual([])
    expect(c.resources.gpu).toMatchObject({ name: ["A100"], count: { min: 2, max: 2 } })
    expect(c.resources.memory).toEqual({ min: 8 })
    expect(c.env).toEqual({ KEPT: "1", SHARED: "cli", LOCAL: "from-shell" })
    expect(apply(["--retry-duration", "30m", "--spot-policy", "auto"])).toMatchObject({ retry: { duration: 1800 }, spotPolicy: "auto" })
    expect(apply([])).toBe(task)
  })

  it("refuses bad values, exclusive pairs, refused keys and run-only arguments for a fleet, naming the argument", () => {
    const cases: ReadonlyArray<[ReadonlyArray<string>, RegExp, number]> = [
      [["--max-price", "abc"], /^argument --max-price: expected a price in dollars per hour .*"abc"$/, 2],
      [["--max-price=0"], /^argument --max-price: expected a positive price/, 2],
      [["-e", "=x"], /^argument -e\/--env: expected KEY=VALUE or KEY .*"=x"$/, 2],
      [["-e", "UNSET_HERE"], /^argument -e\/--env: UNSET_HERE is not set in the local environment/, 2],
      [["--max-duration", "5parsecs"], /^argument --max-duration: expected a duration .*"5parsecs"$/, 2],
      [["--idle-duration", "soon"], /^argument --idle-duration: expected a duration/, 2],
      [["--retry-duration", "5x"], /^argument --retry-duration: expected a duration .*"5x"$/, 2],
      [["--cpu", "x86:many"], /^argument --cpu: /, 2],
      [["--disk", "big"], /^argument --disk: /, 2],
      [["--spot", "--on-demand"], /^argument --on-demand: not allowed with argument --spot$/, 2],
      [["--retry", "--no-retry"], /^argument --no-retry: not allowed with argument --retry$/, 2],
      [["--reuse", "--idle-duration", "1h"], /^argument --idle-duration: not allowed with argument -R\/--reuse$/, 2],
      [["-R"], /^argument -R\/--reuse: `creation_policy: reuse` is not supported yet/, 1]
    ]
    for (const [argv, message, code] of cases) {
      const error = failure(() => apply(argv))
      expect(error.message, argv.join(" ")).toMatch(message)
      expect(error.exitCode, argv.join(" ")).toBe(code)
    }
    // A fleet's -n/--name goes through the same path (the name's own rule).
    const named = (name: string) => applyOverrides(AnyConfiguration as never, fleet, [{ arg: "-n/--name", path: ["name"], value: name }], unsupportedKeys)
    expect(named("f2")).toMatchObject({ type: "fleet", name: "f2" })
    expect(failure(() => named("Bad Name")).message).toMatch(/^argument -n\/--name: /)
    expect(failure(() => apply(["--gpu", "A100", "-b", "local"], fleet)).message).toMatch(/^Unrecognized arguments for a fleet configuration: --gpu, -b\/--backend /)
  })
})
