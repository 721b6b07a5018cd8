// Provider programs before and after they run: providers.yaml programs planned as one job that
// runs the program (parameters checked against the program's schema.yaml at their lines), a
// provider from another repository fetched from a local bare git repository (with clear errors
// for a missing repository or provider), and the jobs a program prints read back — or refused
// naming the provider and what is wrong.
import { afterAll, beforeEach, describe, expect, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Either } from "effect"
import type { ConfigurationError } from "../../src/config/ConfigurationError.ts"
import { fromJsonSchema } from "../../src/workflows/JsonSchemaParams.ts"
import { programOutputJobs, resolvePrograms } from "../../src/workflows/ProviderPrograms.ts"
import { parseWorkflowFiles } from "../../src/workflows/WorkflowFiles.ts"
import { planWorkflow, type PlannedJob } from "../../src/workflows/WorkflowPlan.ts"

const WF = ".dstack/workflows.yaml"
const PROVIDERS = ".dstack/providers.yaml"
const schema = `type: object
additionalProperties: false
properties:
  url:
    type: string
  output:
    type: string
  artifacts:
    type: array
    items:
      type: string
required:
  - url
  - output
`
const providers = `providers:
  - name: curl
    image: python:3.9
    schema: providers/curl/schema.yaml
    commands:
      - PYTHONPATH=providers python3 providers/curl/main.py
`

const planAll = (texts: Record<string, string>, workflow: string) =>
  Effect.gen(function*() {
    const files = yield* parseWorkflowFiles(texts)
    const programs = yield* resolvePrograms(files, texts)
    return yield* planWorkflow(files, workflow, new Map(), { programs })
  })

const issues = (effect: Effect.Effect<unknown, ConfigurationError>) =>
  Effect.map(Effect.flip(effect), (e) => e.issues.map((i) => `${i.file}:${i.line}:${i.column} ${i.path} ${i.message}`))

describe("provider programs of providers.yaml", () => {
  it.effect("plan as one job running the program, with the workflow's data in its environment", () =>
    Effect.gen(function*() {
      const p = yield* planAll({
        [WF]: "workflows:\n  - name: prep\n    provider: bash\n    commands: [true]\n  - name: tiny\n    provider: curl\n    depends_on: [prep]\n    url: http://x/input.txt\n    output: data/input.txt\n    artifacts: [data]\n",
        [PROVIDERS]: providers.replace("name: curl", "name: curl").concat("  - name: bash\n    commands: [echo]\n"),
        "providers/curl/schema.yaml": schema
      }, "tiny")
      expect(p.jobs.map((j) => j.id)).toEqual(["prep:provider", "tiny:provider"])
      const job = p.jobs[1]
      expect(job.program).toEqual({ provider: "curl" })
      expect(job.dependsOn).toEqual(["prep:provider"])
      expect(job.configuration.image).toBe("python:3.9")
      expect(job.configuration.commands).toEqual(["PYTHONPATH=providers python3 providers/curl/main.py"])
      expect(JSON.parse(job.configuration.env!["DSTACK_WORKFLOW_DATA"] as string)).toEqual({
        name: "tiny",
        provider: "curl",
        data: { url: "http://x/input.txt", output: "data/input.txt", artifacts: ["data"] },
        variables: {}
      })
    }))

  it.effect("check the parameters against schema.yaml at their lines, and report schema problems at theirs", () =>
    Effect.gen(function*() {
      const wf = "workflows:\n  - name: tiny\n    provider: curl\n    url: 3\n    outptu: x\n"
      const found = yield* issues(planAll({ [WF]: wf, [PROVIDERS]: providers, "providers/curl/schema.yaml": schema }, "tiny"))
      expect(found).toContain(`${WF}:4:10 workflows[0].url expected string, got 3`)
      expect(found.join("\n")).toMatch(/workflows\.yaml:5:5 workflows\[0\]\.outptu unknown key `outptu`; did you mean `output`\?/)
      expect(found.join("\n")).toMatch(/provider curl takes: url \(required\), output \(required\), artifacts/)

      expect(yield* issues(planAll({ [WF]: wf, [PROVIDERS]: providers }, "tiny"))).toEqual([
        `${PROVIDERS}:4:13 providers[0].schema the schema file providers/curl/schema.yaml of provider curl is not in the files sent with the workflow (is it in the repository?)`
      ])
      expect(yield* issues(planAll({ [WF]: wf, [PROVIDERS]: providers, "providers/curl/schema.yaml": "type: object\nproperties:\n  url:\n    type: strin\n    pattern: x\n" }, "tiny"))).toEqual([
        "providers/curl/schema.yaml:4:11 properties.url.type schema of provider curl: unknown type \"strin\"; expected string, number, integer, boolean, null, array or object",
        expect.stringMatching(/^providers\/curl\/schema\.yaml:5:5 properties\.url\.pattern schema of provider curl: the JSON Schema keyword `pattern` is not supported/)
      ])
    }))

  it("convert the JSON Schema subset the seed uses, and refuse a schema that is not an object's", () => {
    expect(Either.isRight(fromJsonSchema({ type: "object", properties: { n: { type: ["integer", "null"], minimum: 1 }, e: { enum: ["a", "b"] } } }))).toBe(true)
    expect(fromJsonSchema({ type: "array" })).toEqual(Either.left([{ path: ["type"], message: "a provider's parameters schema must be `type: object`" }]))
  })
})

describe("providers from another repository", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "provider-repo-"))
  const sh = (cwd: string, ...args: Array<string>) => execFileSync("git", args, { cwd, stdio: "pipe", env: { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@t", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@t" } })
  const bare = path.join(tmp, "providers.git")
  const work = path.join(tmp, "work")
  fs.mkdirSync(path.join(work, ".dstack"), { recursive: true })
  fs.mkdirSync(path.join(work, "providers/curl"), { recursive: true })
  fs.writeFileSync(path.join(work, PROVIDERS), providers)
  fs.writeFileSync(path.join(work, "providers/curl/schema.yaml"), schema)
  sh(tmp, "init", "--quiet", "--bare", bare)
  sh(work, "init", "--quiet", "-b", "main")
  sh(work, "add", "-A")
  sh(work, "commit", "--quiet", "-m", "curl provider")
  sh(work, "push", "--quiet", bare, "main")
  sh(bare, "symbolic-ref", "HEAD", "refs/heads/main")
  const commit = execFileSync("git", ["rev-parse", "HEAD"], { cwd: work, encoding: "utf8" }).trim()
  const wf = (repo: string, name = "curl") => `workflows:\n  - name: tiny\n    provider:\n      repo: ${repo}\n      name: ${name}\n    url: http://x/a\n    output: a\n`

  const allowLocal = (allowed: boolean) => {
    if (allowed) process.env.DSTACK_SERVER_ALLOW_LOCAL_PROVIDER_REPOS = "1"
    else delete process.env.DSTACK_SERVER_ALLOW_LOCAL_PROVIDER_REPOS
  }
  beforeEach(() => allowLocal(true))
  afterAll(() => allowLocal(false))

  it.effect("on the server's disk is refused unless the operator allows it (any project user plans workflows)", () =>
    Effect.gen(function*() {
      allowLocal(false)
      const [pathIssue] = yield* issues(planAll({ [WF]: wf(bare) }, "tiny"))
      expect(pathIssue).toContain(`${WF}:4:13 workflows[0].provider.repo cannot fetch the provider repository: "${bare}" is not a network git URL`)
      expect(pathIssue).toContain("DSTACK_SERVER_ALLOW_LOCAL_PROVIDER_REPOS=1")
      const [fileIssue] = yield* issues(planAll({ [WF]: wf(`file://${bare}`) }, "tiny"))
      expect(fileIssue).toContain("is not a network git URL")
    }))

  it.effect("is fetched with git at the repository's HEAD: the program runs at that commit, with that repository's schema", () =>
    Effect.gen(function*() {
      const p = yield* planAll({ [WF]: wf(bare) }, "tiny")
      expect(p.jobs[0].code).toEqual({ repoUrl: bare, commit })
      expect(p.jobs[0].program).toEqual({ provider: "curl" })
      expect(yield* issues(planAll({ [WF]: wf(bare).replace("output: a\n", "") }, "tiny"))).toContain(
        `${WF}:2:5 workflows[0].output \`output\` is required`
      )
    }))

  it.effect("a repository that cannot be fetched, or lacks the provider, is an error at the workflow's provider", () =>
    Effect.gen(function*() {
      const missing = path.join(tmp, "nothing.git")
      const [fetchIssue] = yield* issues(planAll({ [WF]: wf(missing) }, "tiny"))
      expect(fetchIssue).toMatch(new RegExp(`^${WF}:4:13 workflows\\[0\\]\\.provider\\.repo cannot fetch the provider repository: cannot fetch ${missing}: git clone exited with 128: fatal: repository '.*' does not exist`))
      expect(yield* issues(planAll({ [WF]: wf(bare, "wget") }, "tiny"))).toEqual([
        `${WF}:5:13 workflows[0].provider.name repository ${bare} defines no provider wget; it defines: curl`
      ])
    }))
})

describe("the jobs a provider program prints", () => {
  const programJob: PlannedJob = {
    id: "tiny:provider",
    workflow: "tiny",
    provider: "curl",
    job: { commands: ["main.py"] },
    configuration: {} as PlannedJob["configuration"],
    dependsOn: ["prep"],
    artifacts: [],
    inputs: ["prep"],
    cacheKey: "k",
    program: { provider: "curl" }
  }

  it("take the workflow's place: after the program's job and its dependencies, with their inputs", () => {
    const out = programOutputJobs(programJob, "installing…\n" + JSON.stringify({ jobs: [
      { commands: ["curl x -o data/a"], artifacts: ["data"], resources: { cpu: "1..", memory: "1GB.." } },
      { image: "busybox", commands: ["ls data"], depends_on: [0], working_dir: "sub" }
    ] }) + "\n")
    expect(Either.isRight(out)).toBe(true)
    const jobs = Either.getOrThrow(out)
    expect(jobs.map((j) => [j.id, j.dependsOn, j.inputs])).toEqual([
      ["tiny-0", ["prep", "tiny:provider"], ["prep"]],
      ["tiny-1", ["prep", "tiny:provider", "tiny-0"], ["prep", "tiny-0"]]
    ])
    expect(jobs[1].configuration.workingDir).toBe("sub")
    expect(jobs[0].artifacts).toEqual(["data"])
  })

  it("are refused, naming the provider and the cause: nothing, not JSON, not jobs, bad references", () => {
    const why = (stdout: string) => Either.match(programOutputJobs(programJob, stdout), { onLeft: (m) => m, onRight: () => "accepted" })
    expect(why("")).toBe(`provider curl printed nothing: a provider program prints its jobs as {"jobs": [...]} on the last line of its output`)
    expect(why("hello\n")).toMatch(/^provider curl did not print its jobs: the last line of its output is not JSON \(.*\): hello$/)
    expect(why(`{"jobs": []}`)).toBe("provider curl printed an empty list of jobs")
    expect(why(`{"jobs": [{"command": ["x"]}]}`)).toBe("provider curl printed invalid jobs: jobs[0]: unknown key `command`; did you mean `commands`?; jobs[0]: `commands` is required")
    expect(why(`{"jobs": [{"commands": ["x"], "depends_on": [3]}]}`)).toBe("provider curl printed invalid jobs: jobs[0] refers to job 3, which does not exist (1 jobs)")
    expect(why(`{"jobs": [{"commands": ["x"], "depends_on": [1]}, {"commands": ["y"], "depends_on": [0]}]}`)).toBe("provider curl printed invalid jobs: depends_on makes a cycle among its jobs")
    expect(why(`{"jobs": [{"commands": ["x"], "artifacts": ["../up"]}]}`)).toMatch(/^provider curl printed invalid jobs: jobs\[0\]\.artifacts: "\.\.\/up" /)
  })
})
