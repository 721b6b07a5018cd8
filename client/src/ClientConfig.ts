/**
 * The client configuration: the projects a user can talk to (`~/.dstack/config.yml`, upstream
 * format `projects: [{name, url, token, default}]`) and how one project is picked from it,
 * the environment (`DSTACK_SERVER_URL`, `DSTACK_TOKEN`, `DSTACK_PROJECT`) and explicit options.
 * Pure: no file access here, so the browser build can use it; see ConfigFile.ts for the file.
 */
import { Either, ParseResult, Schema } from "effect"
import { ClientConfigError } from "./ClientError.ts"

/** One configured project: where its server is and the user token to call it with. */
export const ProjectConfig = Schema.Struct({
  name: Schema.NonEmptyTrimmedString,
  url: Schema.NonEmptyTrimmedString,
  token: Schema.NonEmptyTrimmedString,
  default: Schema.optional(Schema.Boolean)
})
export type ProjectConfig = typeof ProjectConfig.Type

/** The content of `~/.dstack/config.yml`. Unknown top-level keys are kept when it is saved. */
export const ClientConfig = Schema.Struct(
  { projects: Schema.optionalWith(Schema.Array(ProjectConfig), { default: () => [] }) },
  Schema.Record({ key: Schema.String, value: Schema.Unknown })
)
export type ClientConfig = typeof ClientConfig.Type

/** The project a client talks to, fully resolved. */
export interface ResolvedProject {
  readonly name: string
  readonly url: string
  readonly token: string
}

/** What `Client.fromConfig` accepts; each field wins over the environment and the file. */
export interface ClientOptions {
  /** The project to use; required by upstream when `serverUrl` and `userToken` are given (defaults to `main`). */
  readonly projectName?: string | undefined
  /** The server URL, e.g. `http://localhost:3000`. */
  readonly serverUrl?: string | undefined
  /** The user token. */
  readonly userToken?: string | undefined
}

/** Environment variables read by the client. */
export interface ClientEnv {
  readonly DSTACK_SERVER_URL?: string | undefined
  readonly DSTACK_TOKEN?: string | undefined
  readonly DSTACK_PROJECT?: string | undefined
}

/** The project name used when a URL and token are given without one (the server creates it). */
export const DEFAULT_PROJECT_NAME = "main"

const nonEmpty = (s: string | undefined): string | undefined => (s === undefined || s.trim() === "" ? undefined : s.trim())

/** Removes a trailing slash so paths can be appended (`http://h:3000/` → `http://h:3000`). */
export const normalizeUrl = (url: string): string => url.trim().replace(/\/+$/, "")

/** Checks that a server URL is an http(s) URL; returns the normalized URL or a message. */
export const validateServerUrl = (url: string): Either.Either<string, string> => {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return Either.left(`"${url}" is not a URL (expected something like http://localhost:3000)`)
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    return Either.left(`"${url}" is not an http(s) URL`)
  }
  return Either.right(normalizeUrl(url))
}

export const ADD_PROJECT_HINT = "run `dstack project add --name NAME --url URL --token TOKEN`"

/** Decodes a parsed config file, with a message that names the offending field. */
export const decodeClientConfig = (raw: unknown, path: string): Either.Either<ClientConfig, ClientConfigError> => {
  const value = raw === null || raw === undefined ? {} : raw
  return Schema.decodeUnknownEither(ClientConfig, { errors: "all" })(value).pipe(
    Either.mapLeft((error) => {
      const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
        .map((i) => `${i.path.length > 0 ? i.path.join(".") : "(root)"}: ${i.message}`)
        .join("; ")
      return new ClientConfigError({ reason: "Invalid", path, message: `Invalid client config ${path}: ${issues}`, cause: error })
    })
  )
}

/**
 * Picks the project to talk to. Explicit options win over the environment, which wins over
 * the file. With both a URL and a token known (options or env) the file is not needed.
 * `config` is undefined when there is no config file.
 */
export const resolveProject = (
  config: ClientConfig | undefined,
  options: ClientOptions,
  env: ClientEnv,
  path: string
): Either.Either<ResolvedProject, ClientConfigError> => {
  const projectName = nonEmpty(options.projectName) ?? nonEmpty(env.DSTACK_PROJECT)
  const url = nonEmpty(options.serverUrl) ?? nonEmpty(env.DSTACK_SERVER_URL)
  const token = nonEmpty(options.userToken) ?? nonEmpty(env.DSTACK_TOKEN)
  const checked = (p: ResolvedProject): Either.Either<ResolvedProject, ClientConfigError> =>
    Either.match(validateServerUrl(p.url), {
      onLeft: (message) => Either.left(new ClientConfigError({ reason: "Invalid", path, message: `Invalid server URL for project ${p.name}: ${message}` })),
      onRight: (normalized) => Either.right({ ...p, url: normalized })
    })
  if (url !== undefined && token !== undefined) {
    return checked({ name: projectName ?? DEFAULT_PROJECT_NAME, url, token })
  }
  const projects = config?.projects ?? []
  if (projects.length === 0) {
    return Either.left(
      new ClientConfigError({
        reason: "NoConfig",
        path,
        message: `No dstack projects are configured (${config === undefined ? `${path} does not exist` : `${path} lists none`}): ${ADD_PROJECT_HINT}`
      })
    )
  }
  let chosen: ProjectConfig | undefined
  if (projectName !== undefined) {
    chosen = projects.find((p) => p.name === projectName)
    if (chosen === undefined) {
      return Either.left(
        new ClientConfigError({
          reason: "NoProject",
          path,
          message: `Project ${projectName} is not configured in ${path} (configured: ${projects.map((p) => p.name).join(", ")}): ${ADD_PROJECT_HINT}`
        })
      )
    }
  } else {
    chosen = projects.find((p) => p.default === true) ?? (projects.length === 1 ? projects[0] : undefined)
    if (chosen === undefined) {
      return Either.left(
        new ClientConfigError({
          reason: "NoProject",
          path,
          message: `No default project in ${path} (configured: ${projects.map((p) => p.name).join(", ")}): pass --project NAME or run \`dstack project set-default NAME\``
        })
      )
    }
  }
  return checked({ name: chosen.name, url: url ?? chosen.url, token: token ?? chosen.token })
}

/**
 * Adds or replaces a project, keeping the others. With `makeDefault` (or when it is the only
 * project) it becomes the default and no other project stays default.
 */
export const upsertProject = (
  config: ClientConfig,
  project: { readonly name: string; readonly url: string; readonly token: string },
  makeDefault: boolean
): ClientConfig => {
  const others = config.projects.filter((p) => p.name !== project.name)
  const isDefault = makeDefault || others.length === 0 || config.projects.find((p) => p.name === project.name)?.default === true
  const entry: ProjectConfig = { name: project.name, url: normalizeUrl(project.url), token: project.token, default: isDefault }
  const existingIndex = config.projects.findIndex((p) => p.name === project.name)
  const projects = config.projects.map((p) => (p.name === project.name ? entry : isDefault ? withoutDefault(p) : p))
  return { ...config, projects: existingIndex >= 0 ? projects : [...projects, entry] }
}

/** Makes `name` the default project; undefined when no such project is configured. */
export const setDefaultProject = (config: ClientConfig, name: string): ClientConfig | undefined => {
  if (!config.projects.some((p) => p.name === name)) return undefined
  return { ...config, projects: config.projects.map((p) => (p.name === name ? { ...p, default: true } : withoutDefault(p))) }
}

/** Removes a project; undefined when no such project is configured. */
export const removeProject = (config: ClientConfig, name: string): ClientConfig | undefined => {
  if (!config.projects.some((p) => p.name === name)) return undefined
  return { ...config, projects: config.projects.filter((p) => p.name !== name) }
}

const withoutDefault = (p: ProjectConfig): ProjectConfig => ({ ...p, default: false })
