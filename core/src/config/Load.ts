/**
 * Loading `.dstack.yml` files: YAML text → a decoded configuration, or a `ConfigurationError`
 * that lists every problem with its line and column, field path and a plain-words message.
 * Works the same on Node and Deno (`node:fs/promises`).
 */
import { Effect, Either, ParseResult, Schema } from "effect"
import { readdir, readFile } from "node:fs/promises"
import { join } from "node:path"
import { isMap, isScalar, LineCounter, parseDocument, type Document } from "yaml"
import { AnyConfiguration } from "../domain/Configuration.ts"
import { ConfigurationError, type ConfigurationIssue } from "./ConfigurationError.ts"
import { formatPath, issuesOf } from "./Issues.ts"
import { unsupportedKeys } from "./Unsupported.ts"

/** At most this many characters of a message from the YAML parser, which may quote the text. */
const excerpt = (text: string, max = 200): string => (text.length <= max ? text : `${text.slice(0, max)}…`)

export interface ParseOptions {
  /** The file name shown in messages. Defaults to `.dstack.yml`. */
  readonly file?: string
}

export interface ConfigurationParseOptions extends ParseOptions {
  /**
   * Also report, as problems at their line and column, the keys this build does not carry
   * out yet (`unsupportedKeys`): what `dstack apply` checks before it uploads anything.
   */
  readonly supportedOnly?: boolean
  /**
   * The client's environment: a name under `env` without a value (`- HF_TOKEN`, or `HF_TOKEN:`)
   * takes its value from it, as upstream's CLI does, and a name it lacks is a problem at its
   * position. Without it such names stay `null` (and `supportedOnly` refuses them).
   */
  readonly clientEnv?: Readonly<Record<string, string | undefined>>
}

/** A problem found in a decoded value, by its path: reported at that path's position. */
export interface ValueIssue {
  readonly path: ReadonlyArray<PathKey>
  readonly message: string
}

type PathKey = string | number

export { formatPath }

const position = (doc: Document, lineCounter: LineCounter, path: ReadonlyArray<PathKey>, atKey: boolean) => {
  // Point at the key for unknown keys, at the value otherwise; for a missing value, at the
  // closest enclosing node that exists.
  const at = (offset: number) => {
    const { line, col } = lineCounter.linePos(offset)
    return { line, column: col }
  }
  if (atKey && path.length > 0) {
    const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true)
    if (isMap(parent)) {
      const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === path[path.length - 1])
      const range = isScalar(pair?.key) ? pair.key.range : undefined
      if (range) return at(range[0])
    }
  }
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true)
    const range = (node as { range?: [number, number, number] } | null | undefined)?.range
    if (range) return at(range[0])
  }
  return { line: 1, column: 1 }
}

const toIssues = (
  error: ParseResult.ParseError,
  doc: Document,
  lineCounter: LineCounter,
  file: string
): Array<ConfigurationIssue> => {
  // issuesOf names each (path, problem) once; here they are put at their positions, in order.
  return issuesOf(error)
    .map((issue): ConfigurationIssue => {
      const { line, column } = position(doc, lineCounter, issue.path, issue.kind === "Unexpected")
      // A message may quote the bad value whole (`got [[[…`): at most a prefix of it is shown.
      return { file, line, column, path: formatPath(issue.path), message: excerpt(issue.message, 1_000) }
    })
    .sort((a, b) => a.line - b.line || a.column - b.column)
}

/**
 * Decodes YAML text with any schema, reporting every problem with its position. The building
 * block of `parseConfiguration`; other YAML files (client config, workflows) can use it too.
 */
export const decodeYaml = <A, I>(
  schema: Schema.Schema<A, I>,
  text: string,
  options: ParseOptions = {},
  check: (value: A) => ReadonlyArray<ValueIssue> = () => []
): Effect.Effect<A, ConfigurationError> =>
  Effect.suspend(() => {
    const file = options.file ?? ".dstack.yml"
    const lineCounter = new LineCounter()
    const doc = parseDocument(text, { lineCounter, prettyErrors: false })
    if (doc.errors.length > 0) {
      const issues = doc.errors.map((e): ConfigurationIssue => {
        const { line, col } = lineCounter.linePos(e.pos[0])
        return { file, line, column: col, path: "", message: `YAML syntax: ${e.message.split("\n")[0]}` }
      })
      return Effect.fail(new ConfigurationError({ file, issues }))
    }
    // toJS throws on an alias it cannot resolve and on an alias bomb (past maxAliasCount).
    let value: unknown
    try {
      value = doc.toJS({ maxAliasCount: 100 })
    } catch (cause) {
      const message = `YAML aliases: ${excerpt(String((cause as Error)?.message ?? cause))}`
      return Effect.fail(new ConfigurationError({ file, issues: [{ file, line: 1, column: 1, path: "", message }] }))
    }
    if (value === null || value === undefined) {
      return Effect.fail(
        new ConfigurationError({ file, issues: [{ file, line: 1, column: 1, path: "", message: "the file is empty" }] })
      )
    }
    return Either.match(Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "error" })(value), {
      onLeft: (error) => Effect.fail(new ConfigurationError({ file, issues: toIssues(error, doc, lineCounter, file) })),
      onRight: (decoded) => {
        const found = check(decoded)
        if (found.length === 0) return Effect.succeed(decoded)
        const issues = found.map((issue): ConfigurationIssue => ({
          file,
          ...position(doc, lineCounter, issue.path, true),
          path: formatPath(issue.path),
          message: issue.message
        }))
        return Effect.fail(new ConfigurationError({ file, issues }))
      }
    })
  })

/**
 * Parses the text of a `.dstack.yml` file.
 * @example
 * parseConfiguration("type: task\ncommands: [echo hi]\n", { file: ".dstack.yml" })
 */
export const parseConfiguration = (
  text: string,
  options: ConfigurationParseOptions = {}
): Effect.Effect<AnyConfiguration, ConfigurationError> => {
  const clientEnv = options.clientEnv
  // The configuration with its names filled (made by the check, which runs once, on a decoded value).
  let filled: AnyConfiguration | undefined
  const check = (c: AnyConfiguration): ReadonlyArray<ValueIssue> => {
    const unset = clientEnv === undefined ? [] : unsetNames(c, clientEnv)
    filled = clientEnv === undefined ? c : fillEnv(c, clientEnv, unset)
    // In the list form a name is an item: its index is where the file says it.
    const listed = unset.length === 0 ? undefined : rawEnvList(text)
    const missing = unset.map((name): ValueIssue => ({
      path: ["env", listed?.includes(name) ? listed.indexOf(name) : name],
      message: `Environment variable ${name} is not set: \`env.${name}\` has no value in the file, so it takes the one of the environment it is applied from; set it there or give it a value`
    }))
    // A name reported unset is not reported again as a name without a value.
    return [...missing, ...(options.supportedOnly === true ? unsupportedKeys(filled) : [])]
  }
  return decodeYaml(AnyConfiguration, text, options, check).pipe(Effect.map((c) => filled ?? c))
}

/** The items of the file's `env` when it is a list, else undefined. */
const rawEnvList = (text: string): ReadonlyArray<unknown> | undefined => {
  try {
    const env = (parseDocument(text).toJS({ maxAliasCount: 100 }) as { env?: unknown } | null)?.env
    return Array.isArray(env) ? env : undefined
  } catch {
    return undefined
  }
}

/** The names under a run configuration's `env` without a value that `clientEnv` lacks too. */
const unsetNames = (c: AnyConfiguration, clientEnv: Readonly<Record<string, string | undefined>>): ReadonlyArray<string> =>
  c.type === "fleet" ? [] : Object.entries(c.env ?? {}).filter(([name, value]) => value === null && clientEnv[name] === undefined).map(([name]) => name)

/** The configuration with its `env` names without a value filled from `clientEnv` (`unset` ones left out). */
const fillEnv = (
  c: AnyConfiguration,
  clientEnv: Readonly<Record<string, string | undefined>>,
  unset: ReadonlyArray<string>
): AnyConfiguration => {
  if (c.type === "fleet" || c.env === undefined || !Object.values(c.env).includes(null)) return c
  const env: Record<string, string | null> = {}
  for (const [name, value] of Object.entries(c.env)) if (!unset.includes(name)) env[name] = value ?? clientEnv[name] ?? null
  return { ...c, env }
}

const readFailure = (file: string, cause: unknown) =>
  new ConfigurationError({
    file,
    issues: [{ file, line: 1, column: 1, path: "", message: `cannot read the file: ${(cause as Error)?.message ?? String(cause)}` }]
  })

/**
 * Reads and parses a configuration file; with `supportedOnly`, keys this build does not carry
 * out yet are problems too.
 * @example
 * loadConfiguration(".dstack.yml", { supportedOnly: true })
 * // .dstack.yml:9:1  scaling  `scaling` is not supported yet: …
 */
export const loadConfiguration = (
  path: string,
  options: Omit<ConfigurationParseOptions, "file"> = {}
): Effect.Effect<AnyConfiguration, ConfigurationError> =>
  Effect.tryPromise({ try: () => readFile(path, "utf8"), catch: (cause) => readFailure(path, cause) }).pipe(
    Effect.flatMap((text) => parseConfiguration(text, { ...options, file: path }))
  )

/** Whether a file name is a configuration file: `.dstack.yml` or `*.dstack.yml` (or `.yaml`). */
export const isConfigurationFileName = (name: string): boolean =>
  name.endsWith(".dstack.yml") || name.endsWith(".dstack.yaml")

export interface FindOptions {
  /** Look into subdirectories too (skipping `node_modules` and dot-directories). Defaults to false. */
  readonly recursive?: boolean
}

/** Lists the configuration files in a directory, sorted, as paths joined to `dir`. */
export const findConfigurationFiles = (
  dir: string,
  options: FindOptions = {}
): Effect.Effect<Array<string>, ConfigurationError> => {
  const walk = async (d: string): Promise<Array<string>> => {
    const entries = await readdir(d, { withFileTypes: true })
    const found: Array<string> = []
    for (const e of entries) {
      if (e.isFile() && isConfigurationFileName(e.name)) found.push(join(d, e.name))
      else if (options.recursive && e.isDirectory() && !e.name.startsWith(".") && e.name !== "node_modules") {
        found.push(...(await walk(join(d, e.name))))
      }
    }
    return found
  }
  return Effect.tryPromise({ try: () => walk(dir), catch: (cause) => readFailure(dir, cause) }).pipe(
    Effect.map((files) => files.sort())
  )
}
