/**
 * Provider programs (seed-003): providers defined in `.dstack/providers.yaml` — of this project,
 * or of another repository (`provider: {repo, name}`, fetched with git) — found and checked
 * before planning (`resolvePrograms`), and the jobs such a program prints read back after it ran
 * (`programOutputJobs`). The program itself runs as a job of the workflow run, in its image,
 * through the engine like every job; it is handed the workflow in `DSTACK_WORKFLOW_DATA` and
 * prints `{"jobs": [...]}` (the seed's Job fields) as the last line of its standard output.
 */
import { Duration, Effect, Either, ParseResult, Schema } from "effect"
import { createHash } from "node:crypto"
import { mkdtemp, readFile, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { isAbsolute, join, normalize } from "node:path"
import type { ConfigurationError, ConfigurationIssue } from "../config/ConfigurationError.ts"
import { issuesLine, issuesOf } from "../config/Issues.ts"
import * as Provider from "../ports/Provider.ts"
import { git, gitText } from "../repos/Git.ts"
import { artifactPathProblem } from "../runner/Artifacts.ts"
import { fromJsonSchema } from "./JsonSchemaParams.ts"
import {
  decodeAt,
  failWith,
  issueAt,
  parseSource,
  type PathKey,
  PROVIDERS_FILE,
  type ProviderProgram,
  ProvidersFile,
  type WorkflowFiles,
  type WorkflowTexts,
  type YamlSource
} from "./WorkflowFiles.ts"
import {
  type PlannedJob,
  type ProgramCatalog,
  type ProgramEntry,
  programJobId,
  repoProviderKey,
  taskConfigurationOf
} from "./WorkflowPlan.ts"

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex")

/** The parameters of a program without a schema: any keys. */
const AnyParameters = Schema.Record({ key: Schema.String, value: Schema.Unknown })

const programProvider = (name: string, parameters: Schema.Schema<any, any>): Provider.Provider =>
  Provider.make({
    name,
    parameters,
    createJobs: () =>
      Effect.fail(new Provider.ProviderError({ module: name, method: "createJobs", reason: "Invalid", message: `provider ${name} is a program: it makes its jobs when it runs` }))
  })

/** Reads a file of a provider's definition (its schema); `undefined` when it does not exist. */
type ReadFile = (path: string) => Effect.Effect<string | undefined>

/**
 * One providers.yaml's programs as catalog entries: each schema file read, parsed and converted,
 * every problem at its line (in providers.yaml, or in the schema file).
 */
const entriesOf = (
  source: YamlSource,
  programs: ReadonlyArray<{ readonly program: ProviderProgram; readonly path: ReadonlyArray<PathKey> }>,
  read: ReadFile,
  origin: string,
  issues: Array<ConfigurationIssue>,
  code?: { readonly repoUrl: string; readonly commit: string }
) =>
  Effect.gen(function* () {
    const out = new Map<string, ProgramEntry>()
    for (const { program, path } of programs) {
      let parameters: Schema.Schema<any, any> = AnyParameters
      let schemaText = ""
      if (program.schema !== undefined) {
        const problem = isAbsolute(program.schema) || normalize(program.schema).startsWith("..") ? "must be a path inside the repository" : undefined
        const text = problem === undefined ? yield* read(program.schema) : undefined
        if (text === undefined) {
          issues.push(issueAt(source, [...path, "schema"], `the schema file ${program.schema} of provider ${program.name} ${problem ?? `is not in ${origin}`}`))
          continue
        }
        const parsed = yield* Effect.either(parseSource(code === undefined ? program.schema : `${code.repoUrl}:${program.schema}`, text))
        if (Either.isLeft(parsed)) {
          issues.push(...parsed.left.issues)
          continue
        }
        const converted = fromJsonSchema(parsed.right.value)
        if (Either.isLeft(converted)) {
          issues.push(...converted.left.map((p) => issueAt(parsed.right, p.path, `schema of provider ${program.name}: ${p.message}`, p.atKey === true)))
          continue
        }
        parameters = converted.right
        schemaText = text
      }
      out.set(program.name, {
        name: program.name,
        program,
        provider: programProvider(program.name, parameters),
        version: sha256(JSON.stringify({ program, schemaText, commit: code?.commit ?? null })).slice(0, 16),
        ...(code === undefined ? {} : { code })
      })
    }
    return out
  })

/** How long fetching another repository's providers may take. */
const FETCH_TIMEOUT = Duration.seconds(120)

/**
 * The environment variable with which a server's operator lets workflows name provider
 * repositories on the server's own disk (`file://…` or a path). Off by default: any project
 * user plans workflows, and a path would let them have the server read any repository it can.
 */
export const ALLOW_LOCAL_PROVIDER_REPOS = "DSTACK_SERVER_ALLOW_LOCAL_PROVIDER_REPOS"

/** A URL git reaches over the network (`https://`, `http://`, `git://`, `ssh://`, or scp-like `user@host:path`). */
const isNetworkUrl = (url: string): boolean => /^(https?|git|ssh):\/\//i.test(url) || /^[\w.-]+@[\w.-]+:(?!\/\/)/.test(url)

const localReposAllowed = (): boolean => {
  const value = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[ALLOW_LOCAL_PROVIDER_REPOS]
  return value === "1" || value === "true"
}

/** Clones `url` (its default branch, shallow) into a fresh directory; the directory and the commit. */
const fetchRepo = (url: string) =>
  Effect.gen(function* () {
    if (url.startsWith("-") || /^ext::/i.test(url)) return yield* Effect.fail(`${JSON.stringify(url)} is not a repository URL`)
    const local = !isNetworkUrl(url)
    if (local && !localReposAllowed()) {
      return yield* Effect.fail(
        `${JSON.stringify(url)} is not a network git URL (https://, http://, git://, ssh:// or user@host:path); repositories on the server's disk are refused unless its operator sets ${ALLOW_LOCAL_PROVIDER_REPOS}=1`
      )
    }
    const dir = yield* Effect.promise(() => mkdtemp(join(tmpdir(), "dstack-provider-repo-")))
    const failure = { module: "ProviderPrograms", method: "fetch", what: `cannot fetch ${url}` }
    const fetched = yield* git(["clone", "--quiet", "--depth", "1", "--no-tags", "--", url, dir], { cwd: tmpdir(), env: { GIT_ALLOW_PROTOCOL: local ? "file" : "git:http:https:ssh" } }, failure).pipe(
      Effect.zipRight(gitText(["rev-parse", "HEAD"], { cwd: dir }, failure)),
      Effect.timeoutFail({ duration: FETCH_TIMEOUT, onTimeout: () => `git clone of ${url} took longer than ${Duration.format(FETCH_TIMEOUT)}` }),
      Effect.mapError((e) => (typeof e === "string" ? e : e.message ?? String(e))),
      Effect.either
    )
    if (Either.isLeft(fetched)) {
      yield* Effect.promise(() => rm(dir, { recursive: true, force: true }))
      return yield* Effect.fail(fetched.left)
    }
    return { dir, commit: fetched.right }
  })

const readIn = (dir: string): ReadFile => (path) =>
  Effect.promise(() => readFile(join(dir, path), "utf8").catch(() => undefined))

/**
 * The provider programs a workflow file set may use: those of this project's providers.yaml
 * (schemas read from `texts`, where the client put them) and, for each workflow whose provider
 * is `{repo, name}`, that repository's — cloned with git, its providers.yaml and schemas read
 * from the clone. A repository that cannot be fetched, has no providers.yaml or lacks the
 * provider is an issue at the workflow's `provider`.
 */
export const resolvePrograms = (files: WorkflowFiles, texts: WorkflowTexts): Effect.Effect<ProgramCatalog, ConfigurationError> =>
  Effect.gen(function* () {
    const issues: Array<ConfigurationIssue> = []
    const catalog = new Map<string, ProgramEntry>()
    const local = [...files.providers.values()]
    if (local.length > 0) {
      const read: ReadFile = (path) => Effect.succeed(texts[normalize(path)] ?? texts[path])
      const entries = yield* entriesOf(local[0].source, local, read, "the files sent with the workflow (is it in the repository?)", issues)
      for (const [name, entry] of entries) catalog.set(name, entry)
    }
    const byRepo = new Map<string, Array<{ name: string; source: YamlSource; path: ReadonlyArray<PathKey> }>>()
    for (const def of files.workflows.values()) {
      const ref = def.entry.provider
      if (typeof ref === "string") continue
      byRepo.set(ref.repo, [...(byRepo.get(ref.repo) ?? []), { name: ref.name, source: def.source, path: [...def.path, "provider"] }])
    }
    for (const [repo, uses] of byRepo) {
      const fetched = yield* Effect.either(fetchRepo(repo))
      if (Either.isLeft(fetched)) {
        for (const use of uses) issues.push(issueAt(use.source, [...use.path, "repo"], `cannot fetch the provider repository: ${fetched.left}`))
        continue
      }
      const { dir, commit } = fetched.right
      yield* Effect.gen(function* () {
        const text = yield* readIn(dir)(PROVIDERS_FILE)
        if (text === undefined) {
          for (const use of uses) issues.push(issueAt(use.source, [...use.path, "repo"], `repository ${repo} has no ${PROVIDERS_FILE}`))
          return
        }
        const before = issues.length
        const source = yield* Effect.either(parseSource(`${repo}:${PROVIDERS_FILE}`, text))
        if (Either.isLeft(source)) return void issues.push(...source.left.issues)
        const decoded = decodeAt(ProvidersFile, source.right, source.right.value, [])
        if (!decoded.ok) return void issues.push(...decoded.issues)
        const programs = decoded.value.providers.map((program, i) => ({ program, path: ["providers", i] as ReadonlyArray<PathKey> }))
        const entries = yield* entriesOf(source.right, programs, readIn(dir), `repository ${repo}`, issues, { repoUrl: repo, commit })
        if (issues.length > before) return
        for (const use of uses) {
          const entry = entries.get(use.name)
          if (entry === undefined) {
            issues.push(issueAt(use.source, [...use.path, "name"], `repository ${repo} defines no provider ${use.name}; it defines: ${[...entries.keys()].sort().join(", ") || "none"}`))
          } else {
            catalog.set(repoProviderKey(repo, use.name), entry)
          }
        }
      }).pipe(Effect.ensuring(Effect.promise(() => rm(dir, { recursive: true, force: true }))))
    }
    if (issues.length > 0) return yield* Effect.fail(failWith(issues))
    return catalog
  })

// ---------------------------------------------------------------------------------------------
// A program's output

/** What a provider program prints: the seed's Job fields, snake_case. */
const ProgramOutput = Schema.Struct({ jobs: Schema.Array(Provider.ProviderJob) })

/** The last lines of a text, for error messages. */
export const tail = (text: string, lines = 10): string => {
  const all = text.replace(/\s+$/, "").split("\n")
  return (all.length > lines ? ["…", ...all.slice(-lines)] : all).join("\n")
}

const hash = (value: unknown): string => createHash("sha256").update(JSON.stringify(value)).digest("hex")

/**
 * The jobs a provider program printed, as planned jobs taking the place of its workflow: each
 * waits for what the program's job waited for (and for the program's job), gets the same
 * inputs, and has a cache key derived from the program job's. Fails with a message naming the
 * provider and what is wrong with its output.
 */
export const programOutputJobs = (programJob: PlannedJob | Omit<PlannedJob, "job">, stdout: string): Either.Either<Array<PlannedJob>, string> => {
  const provider = programJob.program?.provider ?? programJob.provider
  const lines = stdout.split("\n").map((l) => l.trim()).filter((l) => l !== "")
  const last = lines.at(-1)
  if (last === undefined) return Either.left(`provider ${provider} printed nothing: a provider program prints its jobs as {"jobs": [...]} on the last line of its output`)
  let json: unknown
  try {
    json = JSON.parse(last)
  } catch (e) {
    return Either.left(`provider ${provider} did not print its jobs: the last line of its output is not JSON (${(e as Error).message}): ${last.slice(0, 200)}`)
  }
  const decoded = Schema.decodeUnknownEither(ProgramOutput, { errors: "all", onExcessProperty: "error" })(json)
  if (Either.isLeft(decoded)) {
    return Either.left(`provider ${provider} printed invalid jobs: ${issuesLine(issuesOf(decoded.left))}`)
  }
  const jobs = decoded.right.jobs
  if (jobs.length === 0) return Either.left(`provider ${provider} printed an empty list of jobs`)
  const ids = jobs.map((_, i) => (jobs.length === 1 ? programJob.workflow : `${programJob.workflow}-${i}`))
  const out: Array<PlannedJob> = []
  const problems: Array<string> = []
  for (const [i, job] of jobs.entries()) {
    for (const d of [...(job.dependsOn ?? []), ...(job.master === undefined ? [] : [job.master])]) {
      if (d >= jobs.length || d === i) problems.push(`jobs[${i}] refers to job ${d}, which ${d === i ? "is itself" : `does not exist (${jobs.length} jobs)`}`)
    }
  }
  if (problems.length > 0) return Either.left(`provider ${provider} printed invalid jobs: ${problems.join("; ")}`)
  for (const [i, job] of jobs.entries()) {
    for (const artifact of job.artifacts ?? []) {
      const problem = artifactPathProblem(artifact)
      if (problem !== undefined) problems.push(`jobs[${i}].artifacts: ${JSON.stringify(artifact)} ${problem}`)
    }
    const configuration = taskConfigurationOf(job)
    if (Either.isLeft(configuration)) {
      problems.push(issuesLine(issuesOf(configuration.left).map((issue) => ({ ...issue, path: ["jobs", i, ...issue.path] }))))
      continue
    }
    const internal = (job.dependsOn ?? []).map((d) => ids[d])
    const walk = (k: number, seen: Set<string>) => {
      for (const d of jobs[k].dependsOn ?? []) if (!seen.has(ids[d])) (seen.add(ids[d]), walk(d, seen))
      return seen
    }
    out.push({
      id: ids[i],
      workflow: programJob.workflow,
      provider,
      job,
      configuration: configuration.right,
      dependsOn: [...programJob.dependsOn, programJob.id, ...internal],
      ...(job.master === undefined ? {} : { master: ids[job.master] }),
      artifacts: job.artifacts ?? [],
      inputs: [...new Set([...programJob.inputs, ...walk(i, new Set())])],
      cacheKey: hash({ program: programJob.cacheKey, job: i })
    })
  }
  // Jobs that wait for each other in a circle would wait for good.
  const state = new Map<number, "visiting" | "done">()
  const visit = (k: number): boolean => {
    if (state.get(k) === "done") return false
    if (state.get(k) === "visiting") return true
    state.set(k, "visiting")
    const cyclic = (jobs[k].dependsOn ?? []).some((d) => d < jobs.length && d !== k && visit(d))
    state.set(k, "done")
    return cyclic
  }
  if (jobs.some((_, k) => visit(k))) problems.push("depends_on makes a cycle among its jobs")
  if (problems.length > 0) return Either.left(`provider ${provider} printed invalid jobs: ${problems.join("; ")}`)
  return Either.right(out)
}

export { programJobId }
