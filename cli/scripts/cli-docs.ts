// Generates docs/cli.md from the citty command definitions, so the reference cannot drift
// from the flags the CLI accepts. Run: `npx tsx cli/scripts/cli-docs.ts` (writes the file),
// or `--check` to fail when the file is out of date.
import type { ArgsDef, CommandDef } from "citty"
import { readFile, writeFile } from "node:fs/promises"
import { fileURLToPath } from "node:url"
import { rootCommand } from "../src/main.ts"

type AnyCommand = CommandDef<ArgsDef>

const resolve = async <T>(value: T | Promise<T> | (() => T | Promise<T>) | undefined): Promise<T | undefined> =>
  typeof value === "function" ? await (value as () => T | Promise<T>)() : await value

const GLOBAL = new Set(["project", "debug"])

const flagCell = (name: string, def: ArgsDef[string]): string => {
  const aliases = "alias" in def && def.alias ? (Array.isArray(def.alias) ? def.alias : [def.alias]) : []
  const hint = def.type === "string" ? ` ${(def.valueHint ?? name).toUpperCase()}` : def.type === "enum" ? ` {${(def.options ?? []).join(",")}}` : ""
  const names = [...aliases.map((a) => (a.length === 1 ? `-${a}` : `--${a}`)), `--${name}`]
  if (def.type === "boolean" && def.default === true) names.push(`--no-${name}`)
  return names.map((n) => `\`${n}${hint}\``).join(", ")
}

const escape = (s: string) => s.replace(/\|/g, "\\|")

const renderCommand = async (cmd: AnyCommand, path: ReadonlyArray<string>, out: Array<string>): Promise<void> => {
  const meta = (await resolve(cmd.meta)) ?? {}
  const args = ((await resolve(cmd.args)) ?? {}) as ArgsDef
  const subs = await resolve(cmd.subCommands)
  const own = Object.entries(args).filter(([name]) => path.length === 0 || !GLOBAL.has(name))
  const positionals = own.filter(([, d]) => d.type === "positional")
  const flags = own.filter(([, d]) => d.type !== "positional")
  if (path.length > 0) {
    const usage = ["dstack", ...path, ...(subs ? ["<command>"] : []), ...positionals.map(([n]) => n.toUpperCase()), ...(flags.length > 0 ? ["[OPTIONS]"] : [])]
    out.push(`${"#".repeat(Math.min(path.length + 1, 4))} \`dstack ${path.join(" ")}\``, "", meta.description ?? "", "", "```", usage.join(" "), "```", "")
  }
  if (positionals.length > 0 || flags.length > 0) {
    out.push("| Argument | Description | Default |", "| --- | --- | --- |")
    for (const [name, def] of positionals) out.push(`| \`${name.toUpperCase()}\` | ${escape(def.description ?? "")} | |`)
    for (const [name, def] of flags) {
      const description = [def.description, def.required ? "(required)" : ""].filter(Boolean).join(" ")
      const dflt = def.default === undefined || def.type === "boolean" ? "" : `\`${String(def.default)}\``
      out.push(`| ${flagCell(name, def)} | ${escape(description)} | ${dflt} |`)
    }
    out.push("")
  }
  if (subs) {
    for (const [name, sub] of Object.entries(subs)) await renderCommand((await resolve(sub)) as AnyCommand, [...path, name], out)
  }
}

/** The markdown reference of every command. */
export const renderCliDocs = async (): Promise<string> => {
  const out: Array<string> = [
    "# `dstack` command reference",
    "",
    "<!-- Generated from the citty command definitions by cli/scripts/cli-docs.ts; do not edit. -->",
    "",
    "Global options, accepted before or after the command name:",
    ""
  ]
  await renderCommand(rootCommand as AnyCommand, [], out)
  out.push(
    "`dstack --version` prints the version. Exit codes: `0` success, `1` an expected error (one line",
    "starting with `✗` on stderr), `2` a usage error (unknown option, missing argument). Stack traces",
    "are printed only with `--debug`. The client configuration lives in `~/.dstack/config.yml`",
    "(`projects: [{name, url, token, default}]`); `DSTACK_SERVER_URL`, `DSTACK_TOKEN` and `DSTACK_PROJECT`",
    "override it.",
    ""
  )
  return out.join("\n")
}

export const DOCS_PATH = fileURLToPath(new URL("../../docs/cli.md", import.meta.url))

if ((import.meta as { main?: boolean }).main || process.argv[1] === fileURLToPath(import.meta.url)) {
  const text = await renderCliDocs()
  if (process.argv.includes("--check")) {
    const current = await readFile(DOCS_PATH, "utf8").catch(() => "")
    if (current !== text) {
      console.error(`${DOCS_PATH} is out of date: run \`npx tsx cli/scripts/cli-docs.ts\``)
      process.exit(1)
    }
  } else {
    await writeFile(DOCS_PATH, text)
    console.log(`wrote ${DOCS_PATH}`)
  }
}
