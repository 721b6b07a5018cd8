/**
 * The workflow files of a project: `.dstack/workflows.yaml` (and `.dstack/workflows/*.yaml`),
 * `.dstack/variables.yaml` and `.dstack/providers.yaml`. Parsed keeping each YAML document, so
 * that problems found later (a provider's parameters, a variable, a cycle) are reported at their
 * file, line and field like `.dstack.yml` errors.
 */
import { Effect, ParseResult, Schema } from "effect"
import { readdir, readFile } from "node:fs/promises"
import { join } from "node:path"
import { type Document, isMap, isScalar, LineCounter, parseDocument } from "yaml"
import { ConfigurationError, type ConfigurationIssue } from "../config/ConfigurationError.ts"
import { didYouMean } from "../config/DidYouMean.ts"
import { formatPath, issuesOf } from "../config/Issues.ts"
import { ResourcesSpec } from "../domain/Resources.ts"

export type PathKey = string | number

/** One parsed YAML file, kept to point at positions in it. */
export interface YamlSource {
  readonly file: string
  readonly doc: Document
  readonly lineCounter: LineCounter
  readonly value: unknown
}

/** The 1-based line and column of `path` in a source: the key for `atKey`, else the value. */
export const positionOf = (source: YamlSource, path: ReadonlyArray<PathKey>, atKey = false): { line: number; column: number } => {
  const at = (offset: number) => {
    const { line, col } = source.lineCounter.linePos(offset)
    return { line, column: col }
  }
  if (atKey && path.length > 0) {
    const parent = path.length === 1 ? source.doc.contents : source.doc.getIn(path.slice(0, -1), true)
    if (isMap(parent)) {
      const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === path[path.length - 1])
      const range = isScalar(pair?.key) ? pair.key.range : undefined
      if (range) return at(range[0])
    }
  }
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? source.doc.contents : source.doc.getIn(path.slice(0, n), true)
    const range = (node as { range?: [number, number, number] } | null | undefined)?.range
    if (range) return at(range[0])
  }
  return { line: 1, column: 1 }
}

/** An issue at `path` of a source. */
export const issueAt = (source: YamlSource, path: ReadonlyArray<PathKey>, message: string, atKey = false): ConfigurationIssue => ({
  file: source.file,
  ...positionOf(source, path, atKey),
  path: formatPath(path),
  message
})

/** The issues of a schema decode failure of the value at `prefix` in a source. */
export const issuesOfParseError = (
  source: YamlSource,
  prefix: ReadonlyArray<PathKey>,
  error: ParseResult.ParseError
): Array<ConfigurationIssue> =>
  issuesOf(error).map((issue) => issueAt(source, [...prefix, ...issue.path], issue.message, issue.kind === "Unexpected"))

/** Fails with every issue, grouped under the first issue's file. */
export const failWith = (issues: ReadonlyArray<ConfigurationIssue>): ConfigurationError => {
  const files = [...new Set(issues.map((i) => i.file))]
  const sorted = [...issues].sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line || a.column - b.column)
  return new ConfigurationError({ file: files.join(", "), issues: sorted })
}

/** Parses YAML text into a source, or the syntax errors at their positions. */
export const parseSource = (file: string, text: string): Effect.Effect<YamlSource, ConfigurationError> =>
  Effect.suspend(() => {
    const lineCounter = new LineCounter()
    const doc = parseDocument(text, { lineCounter, prettyErrors: false })
    if (doc.errors.length > 0) {
      return Effect.fail(failWith(doc.errors.map((e) => {
        const { line, col } = lineCounter.linePos(e.pos[0])
        return { file, line, column: col, path: "", message: `YAML syntax: ${e.message.split("\n")[0]}` }
      })))
    }
    return Effect.succeed({ file, doc, lineCounter, value: doc.toJS({ maxAliasCount: 100 }) ?? null })
  })

// ---------------------------------------------------------------------------------------------
// Schemas of the three files

/** Workflow and provider names: they become parts of run names. */
export const WorkflowName = Schema.String.pipe(
  Schema.filter((s) =>
    /^[a-z][a-z0-9-]{0,29}$/.test(s) ||
    `expected a name of 1–30 lowercase letters, digits and -, starting with a letter, got ${JSON.stringify(s)}`
  )
)

/** A provider from another repository: `{repo, name}`. */
export const ProviderRef = Schema.Union(
  Schema.String,
  Schema.Struct({ repo: Schema.String, name: Schema.String })
)
export type ProviderRef = typeof ProviderRef.Type

/**
 * One workflow: its name, provider and dependencies; every other key is a parameter of the
 * provider (checked against the provider's schema when the workflow is planned).
 */
export const WorkflowEntry = Schema.Struct(
  {
    name: WorkflowName,
    provider: ProviderRef,
    depends_on: Schema.optional(Schema.Array(Schema.String)),
    help: Schema.optional(Schema.String)
  },
  Schema.Record({ key: Schema.String, value: Schema.Unknown })
)
export type WorkflowEntry = typeof WorkflowEntry.Type

export const WorkflowsFile = Schema.Struct({ workflows: Schema.Array(Schema.Unknown) })

const VariableValue = Schema.Union(Schema.String, Schema.Number, Schema.Boolean)

/**
 * `.dstack/variables.yaml`: `variables:` maps a name to its default; a name that maps to a map
 * holds the variables of the workflow of that name (they take precedence over the global ones).
 */
export const VariablesFile = Schema.Struct({
  variables: Schema.Record({
    key: Schema.String,
    value: Schema.Union(VariableValue, Schema.Record({ key: Schema.String, value: VariableValue }))
  })
})

/**
 * `.dstack/providers.yaml`: providers that are programs (seed-003: name, image, commands). Two
 * keys beyond the seed: `schema`, the path in the repo of the JSON Schema (YAML) of the
 * parameters (the seed passes it in the program's code; here the server checks parameters before
 * anything runs), and `resources` of the program's own job. Without `image` the program runs on
 * the host, as the `bash` provider's commands do.
 */
export const ProviderProgram = Schema.Struct({
  name: WorkflowName,
  image: Schema.optional(Schema.String),
  commands: Schema.NonEmptyArray(Schema.String),
  schema: Schema.optional(Schema.String),
  resources: Schema.optional(ResourcesSpec)
})
export type ProviderProgram = typeof ProviderProgram.Type
export const ProvidersFile = Schema.Struct({ providers: Schema.Array(ProviderProgram) })

// ---------------------------------------------------------------------------------------------
// The parsed project

/** A workflow with where it was written. */
export interface WorkflowDefinition {
  readonly entry: WorkflowEntry
  readonly source: YamlSource
  /** The path of the entry in its file: `["workflows", 2]`. */
  readonly path: ReadonlyArray<PathKey>
}

/** A variable's default with where it was written. */
export interface VariableDefinition {
  readonly value: string
  readonly source: YamlSource
  readonly path: ReadonlyArray<PathKey>
}

export interface WorkflowFiles {
  readonly workflows: ReadonlyMap<string, WorkflowDefinition>
  /** Global variables by name. */
  readonly variables: ReadonlyMap<string, VariableDefinition>
  /** Variables of one workflow, by workflow then name. */
  readonly workflowVariables: ReadonlyMap<string, ReadonlyMap<string, VariableDefinition>>
  readonly providers: ReadonlyMap<string, { readonly program: ProviderProgram; readonly source: YamlSource; readonly path: ReadonlyArray<PathKey> }>
}

/** The texts of the files, by path relative to the project (`.dstack/workflows.yaml` …). */
export type WorkflowTexts = Readonly<Record<string, string>>

export const WORKFLOWS_FILE = ".dstack/workflows.yaml"
export const WORKFLOWS_DIR = ".dstack/workflows"
export const VARIABLES_FILE = ".dstack/variables.yaml"
export const PROVIDERS_FILE = ".dstack/providers.yaml"

export const decodeAt = <A, I>(schema: Schema.Schema<A, I>, source: YamlSource, value: unknown, prefix: ReadonlyArray<PathKey>) => {
  const result = Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "error" })(value)
  return result._tag === "Right"
    ? { ok: true as const, value: result.right, issues: [] }
    : { ok: false as const, issues: issuesOfParseError(source, prefix, result.left) }
}

const asString = (v: string | number | boolean): string => String(v)

/**
 * Parses the workflow files from their texts. Every problem in every file is reported at once:
 * schema errors, a workflow defined twice, a variables section for a workflow that does not
 * exist.
 *
 * @example
 * parseWorkflowFiles({ ".dstack/workflows.yaml": "workflows:\n  - name: hi\n    provider: bash\n    commands: [echo hi]\n" })
 */
export const parseWorkflowFiles = (texts: WorkflowTexts): Effect.Effect<WorkflowFiles, ConfigurationError> =>
  Effect.gen(function*() {
    const issues: Array<ConfigurationIssue> = []
    const sources: Array<YamlSource> = []
    for (const [file, text] of Object.entries(texts).sort(([a], [b]) => a.localeCompare(b))) {
      const parsed = yield* Effect.either(parseSource(file, text))
      if (parsed._tag === "Left") issues.push(...parsed.left.issues)
      else sources.push(parsed.right)
    }
    const workflows = new Map<string, WorkflowDefinition>()
    const variables = new Map<string, VariableDefinition>()
    const workflowVariables = new Map<string, Map<string, VariableDefinition>>()
    const providers = new Map<string, { program: ProviderProgram; source: YamlSource; path: ReadonlyArray<PathKey> }>()
    const isWorkflowFile = (file: string) => file === WORKFLOWS_FILE || file.startsWith(`${WORKFLOWS_DIR}/`)
    if (!sources.some((s) => isWorkflowFile(s.file)) && !issues.some((i) => isWorkflowFile(i.file))) {
      issues.push({ file: WORKFLOWS_FILE, line: 1, column: 1, path: "", message: `no workflows: write them in ${WORKFLOWS_FILE} (or ${WORKFLOWS_DIR}/*.yaml)` })
    }
    for (const source of sources) {
      if (source.value === null) {
        issues.push(issueAt(source, [], "the file is empty"))
        continue
      }
      if (isWorkflowFile(source.file)) {
        const file = decodeAt(WorkflowsFile, source, source.value, [])
        if (!file.ok) {
          issues.push(...file.issues)
          continue
        }
        file.value.workflows.forEach((raw, index) => {
          const path = ["workflows", index]
          const entry = decodeAt(WorkflowEntry, source, raw, path)
          if (!entry.ok) return issues.push(...entry.issues)
          const previous = workflows.get(entry.value.name)
          if (previous) {
            const at = positionOf(previous.source, [...previous.path, "name"])
            return issues.push(issueAt(source, [...path, "name"], `workflow ${entry.value.name} is defined twice (first at ${previous.source.file}:${at.line})`))
          }
          workflows.set(entry.value.name, { entry: entry.value, source, path })
        })
      } else if (source.file === VARIABLES_FILE) {
        const file = decodeAt(VariablesFile, source, source.value, [])
        if (!file.ok) {
          issues.push(...file.issues)
          continue
        }
        for (const [name, value] of Object.entries(file.value.variables)) {
          if (typeof value === "object") {
            const scoped = new Map<string, VariableDefinition>()
            for (const [inner, v] of Object.entries(value)) scoped.set(inner, { value: asString(v), source, path: ["variables", name, inner] })
            workflowVariables.set(name, scoped)
          } else {
            variables.set(name, { value: asString(value), source, path: ["variables", name] })
          }
        }
      } else if (source.file === PROVIDERS_FILE) {
        const file = decodeAt(ProvidersFile, source, source.value, [])
        if (!file.ok) {
          issues.push(...file.issues)
          continue
        }
        file.value.providers.forEach((program, index) => {
          if (providers.has(program.name)) {
            issues.push(issueAt(source, ["providers", index, "name"], `provider ${program.name} is defined twice`))
          } else {
            providers.set(program.name, { program, source, path: ["providers", index] })
          }
        })
      }
    }
    for (const [name, scoped] of workflowVariables) {
      if (!workflows.has(name) && workflows.size > 0) {
        const first = scoped.values().next().value
        const source = first?.source ?? sources.find((s) => s.file === VARIABLES_FILE)!
        const hint = didYouMean(name, [...workflows.keys()])
        issues.push(issueAt(source, ["variables", name], `variables for workflow ${name}, which is not defined${hint ? `; did you mean \`${hint}\`?` : ""}`, true))
      }
    }
    if (issues.length > 0) return yield* Effect.fail(failWith(issues))
    return { workflows, variables, workflowVariables, providers }
  })

/**
 * Reads the workflow files of a project directory (those that exist) as texts, keyed by their
 * path relative to the directory.
 */
export const readWorkflowTexts = (dir: string): Effect.Effect<WorkflowTexts, ConfigurationError> =>
  Effect.tryPromise({
    try: async () => {
      const texts: Record<string, string> = {}
      const tryRead = async (rel: string) => {
        const text = await readFile(join(dir, rel), "utf8").catch((e: NodeJS.ErrnoException) => {
          if (e.code === "ENOENT") return undefined
          throw e
        })
        if (text !== undefined) texts[rel] = text
      }
      await tryRead(WORKFLOWS_FILE)
      await tryRead(VARIABLES_FILE)
      await tryRead(PROVIDERS_FILE)
      const extra = await readdir(join(dir, WORKFLOWS_DIR)).catch((e: NodeJS.ErrnoException) => {
        if (e.code === "ENOENT") return [] as Array<string>
        throw e
      })
      for (const name of extra.sort()) if (/\.ya?ml$/.test(name)) await tryRead(`${WORKFLOWS_DIR}/${name}`)
      return texts
    },
    catch: (cause) =>
      new ConfigurationError({
        file: join(dir, ".dstack"),
        issues: [{ file: join(dir, ".dstack"), line: 1, column: 1, path: "", message: `cannot read the workflow files: ${(cause as Error)?.message ?? String(cause)}` }]
      })
  })

/** Reads and parses the workflow files of a project directory. */
export const loadWorkflowFiles = (dir: string): Effect.Effect<WorkflowFiles, ConfigurationError> =>
  Effect.flatMap(readWorkflowTexts(dir), parseWorkflowFiles)

// ---------------------------------------------------------------------------------------------
// Variables

/** `${{ variables.NAME }}` or `${{ NAME }}`, spaces optional. */
const REFERENCE = /\$\{\{\s*(?:variables\.)?([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}/g

/**
 * Replaces the variable references in every string of `value` (keys left alone). Unknown names
 * are issues at their path; `used` collects the names referenced.
 */
export const interpolate = (
  value: unknown,
  lookup: (name: string) => string | undefined,
  known: ReadonlyArray<string>,
  report: (path: ReadonlyArray<PathKey>, message: string) => void,
  used: Set<string>,
  path: ReadonlyArray<PathKey> = []
): unknown => {
  if (typeof value === "string") {
    return value.replace(REFERENCE, (whole, name: string) => {
      const found = lookup(name)
      if (found === undefined) {
        const hint = didYouMean(name, known)
        report(path, `unknown variable \`${name}\` in ${whole}${hint ? `; did you mean \`${hint}\`?` : known.length > 0 ? `; defined: ${known.join(", ")}` : `; define it in ${VARIABLES_FILE}`}`)
        return whole
      }
      used.add(name)
      return found
    })
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, lookup, known, report, used, [...path, i]))
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, lookup, known, report, used, [...path, k])]))
  }
  return value
}
