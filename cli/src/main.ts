/**
 * The `dstack` command: a root citty command with lazily imported sub-commands (one file each
 * in commands/), global --debug and --project, and one error line per expected failure.
 * Exit codes: 0 success, 1 expected error, 2 usage error. Run with `node cli/bin/dstack.mjs`
 * or `deno run -A cli/src/main.ts`.
 */
import { defineCommand, renderUsage, runCommand } from "citty"
import { pathToFileURL } from "node:url"
import type { ArgsDef, CommandDef } from "citty"
import type { ClientError } from "@dstack-ts/client"
import pkg from "../package.json" with { type: "json" }
import { CliError, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, globalArgs, globals } from "./context.ts"
import { isTTY, print, printDetail, printError } from "./ui.ts"

export const VERSION: string = pkg.version

const lazy = <M extends { default: CommandDef<any> }>(load: () => Promise<M>) => () => load().then((m) => m.default)

/** The root command; docs/cli.md is generated from it (cli/scripts/cli-docs.ts). */
export const rootCommand = defineCommand({
  meta: { name: "dstack", version: VERSION, description: "Run ML and data work on your machine (more backends as plugins) and keep stacks of dataframes, plots and models" },
  args: globalArgs,
  subCommands: {
    server: lazy(() => import("./commands/server.ts")),
    project: lazy(() => import("./commands/project.ts")),
    init: lazy(() => import("./commands/init.ts")),
    apply: lazy(() => import("./commands/apply.ts")),
    run: lazy(() => import("./commands/run.ts")),
    artifacts: lazy(() => import("./commands/artifacts.ts")),
    ps: lazy(() => import("./commands/ps.ts")),
    logs: lazy(() => import("./commands/logs.ts")),
    stop: lazy(() => import("./commands/stop.ts")),
    delete: lazy(() => import("./commands/delete.ts")),
    offer: lazy(() => import("./commands/offer.ts")),
    fleet: lazy(() => import("./commands/fleet.ts")),
    attach: lazy(() => import("./commands/attach.ts")),
    runner: lazy(() => import("./commands/runner.ts")),
    push: lazy(() => import("./commands/push.ts")),
    pull: lazy(() => import("./commands/pull.ts")),
    stacks: lazy(() => import("./commands/stacks.ts")),
    secret: lazy(() => import("./commands/secret.ts"))
  }
})

type AnyCommand = CommandDef<ArgsDef>

const resolve = async <T>(value: T | Promise<T> | (() => T | Promise<T>) | undefined): Promise<T | undefined> =>
  typeof value === "function" ? await (value as () => T | Promise<T>)() : await value

/** Takes --debug and --project out of argv wherever they appear (before a `--`). */
export const extractGlobals = (argv: ReadonlyArray<string>): { debug: boolean; project: string | undefined; rest: Array<string> } => {
  let debug = false
  let project: string | undefined
  const rest: Array<string> = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === "--") {
      rest.push(...argv.slice(i))
      break
    }
    if (arg === "--debug") debug = true
    else if (arg === "--project") {
      const value = argv[i + 1]
      if (value === undefined || value.startsWith("-")) throw new CliError("--project needs a project name", EXIT_USAGE)
      project = value
      i++
    } else if (arg.startsWith("--project=")) project = arg.slice("--project=".length)
    else rest.push(arg)
  }
  return { debug, project, rest }
}

/** Finds the command that argv addresses: the chain from the root to the deepest sub-command. */
const resolveChain = async (argv: ReadonlyArray<string>): Promise<{ chain: Array<AnyCommand>; names: Array<string>; rest: Array<string> }> => {
  const chain: Array<AnyCommand> = [rootCommand as AnyCommand]
  const names: Array<string> = []
  let rest = [...argv]
  for (;;) {
    const cmd = chain[chain.length - 1]
    const subs = await resolve(cmd.subCommands)
    if (!subs) break
    const index = rest.findIndex((a) => !a.startsWith("-"))
    if (index < 0 || rest.slice(0, index).includes("--")) break
    const name = rest[index]
    if (!(name in subs)) break
    chain.push((await resolve(subs[name])) as AnyCommand)
    names.push(name)
    rest = rest.slice(index + 1)
  }
  return { chain, names, rest }
}

/** The names an argument answers to on the command line: its own, its kebab-case form, its aliases. */
const optionNames = (name: string, def: ArgsDef[string]): Array<string> => {
  const aliases = "alias" in def && def.alias ? (Array.isArray(def.alias) ? def.alias : [def.alias]) : []
  return [name, name.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase(), ...aliases]
}

/** Rejects flags that the command does not declare (citty itself ignores them). */
const checkFlags = async (cmd: AnyCommand, argv: ReadonlyArray<string>, names: ReadonlyArray<string>): Promise<void> => {
  const args = ((await resolve(cmd.args)) ?? {}) as ArgsDef
  const known = new Set<string>(["help", "h"])
  for (const [name, def] of Object.entries(args)) {
    if (def.type === "positional") continue
    for (const n of optionNames(name, def)) {
      known.add(n)
      if (def.type === "boolean") known.add(`no-${n}`)
    }
  }
  for (const arg of argv) {
    if (arg === "--") break
    if (!arg.startsWith("-") || arg === "-") continue
    const flag = arg.replace(/^-{1,2}/, "").split("=")[0]
    // Bundled short flags (-ay) are each a flag.
    const flags = !arg.startsWith("--") && flag.length > 1 && !known.has(flag) ? [...flag] : [flag]
    for (const f of flags) {
      if (!known.has(f)) throw new CliError(`Unknown option ${arg} for \`${commandLabel(names)}\``, EXIT_USAGE)
    }
  }
}

/** A negative number, as Python's argparse tells one from an option (`-1`, `-0.5`, `-.5`). */
const NEGATIVE_NUMBER = /^-\d+$|^-\d*\.\d+$/

/**
 * Joins a value-taking option and a negative number after it (`--max-price -1` becomes
 * `--max-price=-1`), as upstream's argparse reads them: the number is the option's value, not a
 * flag of its own. What the value means is then the option's to judge. Stops at `--`.
 */
export const joinNegativeValues = async (cmd: AnyCommand, argv: ReadonlyArray<string>): Promise<Array<string>> => {
  const args = ((await resolve(cmd.args)) ?? {}) as ArgsDef
  const takesValue = new Map<string, string>()
  for (const [name, def] of Object.entries(args)) {
    if (def.type !== "string" && def.type !== "enum") continue
    for (const n of optionNames(name, def)) takesValue.set(n.length === 1 ? `-${n}` : `--${n}`, `--${name}`)
  }
  const out: Array<string> = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === "--") {
      out.push(...argv.slice(i))
      break
    }
    const long = takesValue.get(arg)
    const next = argv[i + 1]
    if (long !== undefined && next !== undefined && NEGATIVE_NUMBER.test(next)) {
      out.push(`${long}=${next}`)
      i++
    } else out.push(arg)
  }
  return out
}

const commandLabel = (names: ReadonlyArray<string>) => ["dstack", ...names].join(" ")

// Tag checks instead of instanceof: main.ts does not load core (it is big) before a command needs it.
const isTagged = <T extends string>(error: unknown, tag: T): error is Error & { _tag: T } & (T extends "ClientError" ? ClientError : unknown) =>
  error instanceof Error && (error as { _tag?: unknown })._tag === tag

/** Prints a failure: one line, plus the stack with --debug. Returns the exit code. */
export const report = (error: unknown, debug: boolean, names: ReadonlyArray<string> = []): number => {
  if (error instanceof CliError) {
    printError(error.message)
    if (error.exitCode === EXIT_USAGE) printDetail(`Run \`${commandLabel(names)} --help\` for usage.`)
    if (debug && error.stack) printDetail(error.stack)
    return error.exitCode
  }
  if (isTagged(error, "ClientConfigError")) {
    printError(error.message)
    if (debug) printDetail(error.stack ?? "")
    return EXIT_FAILURE
  }
  if (isTagged(error, "ConfigurationError")) {
    // The first line says which file; the next ones are its problems, compiler style.
    const [first, ...issues] = error.message.split("\n")
    printError(first)
    for (const issue of issues) process.stderr.write(issue + "\n")
    if (debug) printDetail(error.stack ?? "")
    return EXIT_FAILURE
  }
  if (isTagged(error, "ClientError")) {
    printError(describeClientError(error))
    if (debug) printDetail([error.stack ?? "", error.cause ? `Caused by: ${String((error.cause as Error)?.stack ?? error.cause)}` : ""].join("\n"))
    return EXIT_FAILURE
  }
  // citty's own argument errors (missing positional, unknown sub-command, bad enum value).
  if (error instanceof Error && error.name === "CLIError") {
    printError(error.message.replace(/\u001B\[[0-9;]*m/g, ""))
    printDetail(`Run \`${commandLabel(names)} --help\` for usage.`)
    if (debug && error.stack) printDetail(error.stack)
    return EXIT_USAGE
  }
  printError(`Unexpected error: ${error instanceof Error ? error.message : String(error)}${debug ? "" : " (run with --debug for details)"}`)
  if (debug) printDetail(error instanceof Error ? (error.stack ?? String(error)) : String(error))
  return EXIT_FAILURE
}

/** One line for a failed server call. */
export const describeClientError = (error: ClientError): string => {
  switch (error.reason) {
    case "Unauthenticated":
      return `${error.message}: the server at ${error.url} does not accept the token (check it with \`dstack project add\`)`
    case "NotAvailable":
    case "Unreachable":
      return error.message
    default:
      return error.message
  }
}

/** Runs the CLI with `argv` (without the node and script paths) and returns the exit code. */
export const main = async (argv: ReadonlyArray<string>): Promise<number> => {
  let names: Array<string> = []
  let debug = argv.includes("--debug")
  try {
    const parsed = extractGlobals(argv)
    debug = parsed.debug
    globals.debug = parsed.debug
    globals.project = parsed.project
    const { rest } = parsed
    if (rest.length === 1 && (rest[0] === "--version" || rest[0] === "-v")) {
      print(VERSION)
      return EXIT_OK
    }
    const resolved = await resolveChain(rest)
    names = resolved.names
    const cmd = resolved.chain[resolved.chain.length - 1]
    const parent = resolved.chain.length > 1 ? resolved.chain[resolved.chain.length - 2] : undefined
    const beforeDashes = rest.indexOf("--") < 0 ? rest : rest.slice(0, rest.indexOf("--"))
    const wantsHelp = beforeDashes.includes("--help") || beforeDashes.includes("-h")
    const subs = await resolve(cmd.subCommands)
    if (wantsHelp || (subs && !cmd.run && resolved.rest.filter((a) => !a.startsWith("-")).length === 0)) {
      // `dstack`, `dstack project`: a group without a sub-command shows its usage.
      const usage = await renderUsage(cmd, parent)
      print(isTTY() ? usage : usage.replace(/\u001B\[[0-9;]*m/g, ""))
      return wantsHelp || rest.length === 0 ? EXIT_OK : EXIT_USAGE
    }
    // `dstack run WORKFLOW --NAME value` takes any option after the workflow as a variable.
    const joined = await joinNegativeValues(cmd, resolved.rest)
    if (names[0] !== "run") await checkFlags(cmd, joined, names)
    await runCommand(rootCommand as AnyCommand, { rawArgs: [...rest.slice(0, rest.length - resolved.rest.length), ...joined] })
    return EXIT_OK
  } catch (error) {
    return report(error, debug, names)
  }
}

// `deno run -A cli/src/main.ts …` and `npx tsx cli/src/main.ts …` run this module directly (Node 20
// has no import.meta.main: compare the script path); bin/dstack.mjs imports it and calls main.
if ((import.meta as { main?: boolean }).main ?? (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href)) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code
  })
}
