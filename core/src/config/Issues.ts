/**
 * A schema's decoding failure in the words users read: one issue per wrong field, with its path
 * (`resources.gpu.memory`, `commands[2]`) and a plain message — `expected a string, got 5`,
 * ``unknown key `hsot`; did you mean `host`?``, `` `host` is required``. What `.dstack.yml`
 * files (Load.ts, with line and column) and plugins' configuration sections (PluginConfig.ts,
 * in one line) report.
 */
import { ParseResult } from "effect"
import { didYouMean } from "./DidYouMean.ts"

/** Writes a path the way users read it: `resources.gpu.memory`, `commands[2]`. */
export const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (acc, k) => (typeof k === "number" ? `${acc}[${k}]` : acc === "" ? String(k) : `${acc}.${String(k)}`),
    ""
  )

/** One wrong field: where (the schema's path to it) and what is wrong, in plain words. */
export interface Issue {
  readonly path: ReadonlyArray<string | number>
  /** `Unexpected`: a key the schema does not know; `Missing`: a required key absent; else the value. */
  readonly kind: "Unexpected" | "Missing" | "Value"
  readonly message: string
}

const plainWords = (message: string): string =>
  message.replace(/^Expected (.*), actual (.*)$/s, "expected $1, got $2")

const startsWith = (path: ReadonlyArray<PropertyKey>, prefix: ReadonlyArray<PropertyKey>) =>
  prefix.length <= path.length && prefix.every((k, i) => k === path[i])

/** Every issue of a decoding failure (`errors: "all"` names every wrong field), each once. */
export const issuesOf = (error: ParseResult.ParseError): Array<Issue> => {
  const raw = ParseResult.ArrayFormatter.formatErrorSync(error)
  // `optionalWith` adds an "or undefined" branch whose failure only repeats the real one.
  const kept = raw.filter(
    (issue) =>
      !(issue.message.startsWith("Expected undefined, actual") &&
        raw.some((other) => other !== issue && startsWith(other.path, issue.path) && !other.message.startsWith("Expected undefined")))
  )
  const seen = new Set<string>()
  const issues: Array<Issue> = []
  for (const issue of kept) {
    const path = issue.path as ReadonlyArray<string | number>
    let kind: Issue["kind"] = "Value"
    let message = plainWords(issue.message)
    if (issue._tag === "Unexpected") {
      kind = "Unexpected"
      const key = String(path[path.length - 1])
      const allowed = [...(issue.message.match(/"[^"]*"/g) ?? [])].map((s) => s.slice(1, -1))
      const hint = didYouMean(key, allowed)
      message = `unknown key \`${key}\`${hint ? `; did you mean \`${hint}\`?` : allowed.length > 0 ? `; expected one of ${allowed.join(", ")}` : ""}`
    } else if (issue._tag === "Missing") {
      kind = "Missing"
      message = `\`${String(path[path.length - 1])}\` is required`
    }
    const key = `${formatPath(path)}\n${message}`
    if (seen.has(key)) continue
    seen.add(key)
    issues.push({ path, kind, message })
  }
  return mergeAlternatives(issues)
}

const EXPECTED = /^expected (.*), got (.*)$/s

/**
 * A value that matches none of a union's members fails once per member: those issues at one
 * path become one, `expected "node_port" or "port_forward", got "tunnel"`.
 */
const mergeAlternatives = (issues: ReadonlyArray<Issue>): Array<Issue> => {
  const merged: Array<Issue> = []
  const at = new Map<string, { index: number; expected: Array<string>; got: string }>()
  for (const issue of issues) {
    const m = issue.kind === "Value" ? EXPECTED.exec(issue.message) : null
    if (m === null) {
      merged.push(issue)
      continue
    }
    const key = `${formatPath(issue.path)}\n${m[2]}`
    const known = at.get(key)
    if (known === undefined) {
      at.set(key, { index: merged.length, expected: [m[1]], got: m[2] })
      merged.push(issue)
      continue
    }
    if (!known.expected.includes(m[1])) known.expected.push(m[1])
    const alternatives = known.expected.length === 2 ? known.expected.join(" or ") : `${known.expected.slice(0, -1).join(", ")} or ${known.expected.at(-1)}`
    merged[known.index] = { ...merged[known.index], message: `expected ${alternatives}, got ${known.got}` }
  }
  return merged
}

/**
 * The issues in one line: each after the path of what holds it (the section itself for a key
 * at its top, whose message names the key), `; ` between them.
 * @example "`runner_image` is required; kubeconfig: unknown key `dta`; did you mean `data`?"
 */
export const issuesLine = (issues: ReadonlyArray<Issue>): string =>
  issues
    .map((issue) => {
      const where = issue.kind === "Value" ? issue.path : issue.path.slice(0, -1)
      return where.length === 0 ? issue.message : `${formatPath(where)}: ${issue.message}`
    })
    .join("; ")
