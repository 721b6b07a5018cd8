// Workflow files and planning: files parsed with every problem at its file, line and field;
// variables interpolated with command-line overrides; depends_on as a DAG (unknown names and
// cycles refused); provider parameters checked at their line; cache keys that move with what
// they cover.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { ConfigurationError } from "../../src/config/ConfigurationError.ts"
import * as Provider from "../../src/ports/Provider.ts"
import { Workflows } from "../../src/index.ts"

const shell = Provider.make({
  name: "shell",
  parameters: Schema.Struct({
    commands: Schema.Array(Schema.String),
    artifacts: Schema.optional(Schema.Array(Schema.String)),
    nodes: Schema.optional(Schema.Int)
  }),
  createJobs: (p) =>
    Effect.succeed(
      p.nodes === undefined
        ? [{ commands: p.commands, ...(p.artifacts ? { artifacts: p.artifacts } : {}) }]
        : Array.from({ length: p.nodes }, (_, i) => ({ commands: p.commands, ...(i > 0 ? { master: 0 } : {}) }))
    )
})
// Makes a job the engine cannot take (a Python version no host image is made for).
const broken = Provider.make({
  name: "broken",
  parameters: Schema.Struct({}),
  createJobs: () => Effect.succeed([{ commands: ["true"], python: "2.7" }])
})
const catalog: Workflows.ProviderCatalog = new Map([
  ["shell", { provider: shell, version: "1.0.0" }],
  ["broken", { provider: broken, version: "0.0.1" }]
])

const WF = ".dstack/workflows.yaml"
const VARS = ".dstack/variables.yaml"

const pipeline = `workflows:
  - name: prepare
    provider: shell
    commands: ["echo size=\${{ variables.size }}"]
  - name: train
    provider: shell
    depends_on: [prepare]
    commands: ["echo epochs=\${{ epochs }} lr=\${{ variables.lr }}"]
  - name: evaluate
    provider: shell
    depends_on: [train]
    commands: ["echo evaluate"]
`
const variables = `variables:
  size: 10
  lr: 0.1
  train:
    epochs: 2
`

const plan = (texts: Record<string, string>, workflow: string, options: Workflows.PlanOptions = {}) =>
  Effect.flatMap(Workflows.parseWorkflowFiles(texts), (files) => Workflows.planWorkflow(files, workflow, catalog, options))

const issues = (effect: Effect.Effect<unknown, ConfigurationError>) =>
  Effect.map(Effect.flip(effect), (e) => e.issues.map((i) => `${i.file}:${i.line}:${i.column} ${i.path} ${i.message}`))

describe("workflow files", () => {
  it.effect("plans a chain in dependency order with variables and overrides", () =>
    Effect.gen(function*() {
      const p = yield* plan({ [WF]: pipeline, [VARS]: variables }, "evaluate", { overrides: { epochs: "5" } })
      expect(p.jobs.map((j) => j.id)).toEqual(["prepare", "train", "evaluate"])
      expect(p.jobs[0].configuration.commands).toEqual(["echo size=10"])
      expect(p.jobs[1].configuration.commands).toEqual(["echo epochs=5 lr=0.1"])
      expect(p.jobs[1].dependsOn).toEqual(["prepare"])
      expect([...p.jobs[2].inputs].sort()).toEqual(["prepare", "train"])
      expect(p.variables).toEqual({ epochs: "5", lr: "0.1", size: "10" })
    }))

  it.effect("reads .dstack/workflows/*.yaml beside workflows.yaml", () =>
    Effect.gen(function*() {
      const p = yield* plan({
        [WF]: "workflows:\n  - name: a\n    provider: shell\n    commands: [echo a]\n",
        ".dstack/workflows/more.yaml": "workflows:\n  - name: b\n    provider: shell\n    depends_on: [a]\n    commands: [echo b]\n"
      }, "b")
      expect(p.jobs.map((j) => j.id)).toEqual(["a", "b"])
    }))

  it.effect("cache keys move with variables, code and dependencies, and only with those", () =>
    Effect.gen(function*() {
      const texts = { [WF]: pipeline, [VARS]: variables }
      const a = yield* plan(texts, "evaluate", { codeHash: "c1" })
      const same = yield* plan(texts, "evaluate", { codeHash: "c1" })
      const lr = yield* plan(texts, "evaluate", { codeHash: "c1", overrides: { lr: "0.2" } })
      const code = yield* plan(texts, "evaluate", { codeHash: "c2" })
      expect(same.jobs.map((j) => j.cacheKey)).toEqual(a.jobs.map((j) => j.cacheKey))
      // lr is used by train only: prepare keeps its key, train and what follows do not.
      expect(lr.jobs[0].cacheKey).toBe(a.jobs[0].cacheKey)
      expect(lr.jobs[1].cacheKey).not.toBe(a.jobs[1].cacheKey)
      expect(lr.jobs[2].cacheKey).not.toBe(a.jobs[2].cacheKey)
      expect(code.jobs.every((j, i) => j.cacheKey !== a.jobs[i].cacheKey)).toBe(true)
    }))

  it.effect("gives a provider's jobs their master", () =>
    Effect.gen(function*() {
      const p = yield* plan({ [WF]: "workflows:\n  - name: dist\n    provider: shell\n    nodes: 2\n    commands: [hostname]\n" }, "dist")
      expect(p.jobs.map((j) => [j.id, j.master])).toEqual([["dist-0", undefined], ["dist-1", "dist-0"]])
    }))

  it.effect("refuses a cycle at the depends_on entry that closes it", () =>
    Effect.gen(function*() {
      const text = "workflows:\n  - name: a\n    provider: shell\n    depends_on: [b]\n    commands: [x]\n  - name: b\n    provider: shell\n    depends_on: [a]\n    commands: [y]\n"
      expect(yield* issues(plan({ [WF]: text }, "a"))).toEqual([`${WF}:8:18 workflows[1].depends_on[0] depends_on makes a cycle: a → b → a`])
    }))

  it.effect("names unknown dependencies, providers, variables and parameters at their lines", () =>
    Effect.gen(function*() {
      const text = `workflows:
  - name: a
    provider: shel
    commands: [x]
  - name: b
    provider: shell
    depends_on: [prepar]
    commands: [y]
  - name: c
    provider: shell
    command: ["\${{ variables.sise }}"]
  - name: d
    provider: shell
    commands: ["\${{ variables.sise }}"]
  - name: prepare
    provider: shell
    commands: [p]
`
      expect(yield* issues(plan({ [WF]: text, [VARS]: "variables:\n  size: 1\n" }, "a"))).toEqual([
        `${WF}:3:15 workflows[0].provider no provider named shel; did you mean \`shell\`?; installed: broken, shell (or define it in .dstack/providers.yaml)`
      ])
      expect(yield* issues(plan({ [WF]: text }, "b"))).toEqual([
        `${WF}:7:18 workflows[4].depends_on[0] depends on workflow prepar, which is not defined; did you mean \`prepare\`?`.replace("[4]", "[1]")
      ])
      expect(yield* issues(plan({ [WF]: text, [VARS]: "variables:\n  size: 1\n" }, "c"))).toEqual([
        `${WF}:9:5 workflows[2].commands \`commands\` is required`,
        `${WF}:10:15 workflows[2].provider provider shell takes: commands (required), artifacts, nodes`,
        `${WF}:11:5 workflows[2].command unknown key \`command\`; did you mean \`commands\`?`,
        `${WF}:11:15 workflows[2].command[0] unknown variable \`sise\` in \${{ variables.sise }}; did you mean \`size\`?`
      ])
      expect(yield* issues(plan({ [WF]: text, [VARS]: "variables:\n  size: 1\n" }, "d"))).toEqual([
        `${WF}:14:16 workflows[3].commands[0] unknown variable \`sise\` in \${{ variables.sise }}; did you mean \`size\`?`
      ])
    }))

  it.effect("plans artifacts and gives them to the transitive dependents; refuses paths that leave the working directory", () =>
    Effect.gen(function*() {
      const text = "workflows:\n  - name: a\n    provider: shell\n    commands: [x]\n    artifacts: [data]\n" +
        "  - name: b\n    provider: shell\n    commands: [x]\n    depends_on: [a]\n" +
        "  - name: c\n    provider: shell\n    commands: [x]\n    depends_on: [b]\n" +
        "  - name: d\n    provider: shell\n    commands: [x]\n    artifacts: [ok, ../up, /abs]\n"
      const planned = yield* plan({ [WF]: text }, "c")
      expect(planned.jobs.map((j) => [j.id, j.artifacts, j.inputs])).toEqual([["a", ["data"], []], ["b", [], ["a"]], ["c", [], ["b", "a"]]])
      expect(yield* issues(plan({ [WF]: text }, "d"))).toEqual([
        `${WF}:17:21 workflows[3].artifacts[1] artifact "../up" leaves the working directory`,
        `${WF}:17:28 workflows[3].artifacts[2] artifact "/abs" is absolute; artifacts are folders relative to the working directory`
      ])
    }))

  it.effect("refuses a job its provider made invalid, naming the provider and the field", () =>
    Effect.gen(function*() {
      const found = yield* issues(plan({ [WF]: "workflows:\n  - name: a\n    provider: broken\n" }, "a"))
      expect(found).toHaveLength(1)
      expect(found[0]).toMatch(/^\.dstack\/workflows\.yaml:2:5 workflows\[0\] provider broken made job 0 invalid: python expected a Python version/)
    }))

  it.effect("refuses an override that is not a variable, suggesting the closest", () =>
    Effect.gen(function*() {
      expect(yield* issues(plan({ [WF]: pipeline, [VARS]: variables }, "train", { overrides: { epocs: "3" } }))).toEqual([
        "(command line):1:1  --epocs is not a variable of train or its dependencies; did you mean --epochs?; variables: epochs, lr, size"
      ])
    }))

  it.effect("reports schema problems of every file at once, and an unknown workflow", () =>
    Effect.gen(function*() {
      const found = yield* issues(Workflows.parseWorkflowFiles({
        [WF]: "workflows:\n  - name: Bad_Name\n    provider: shell\n  - provider: shell\n",
        [VARS]: "variables:\n  size: [1, 2]\n",
        ".dstack/providers.yaml": "providers:\n  - name: curl\n    image: python:3.9\n"
      }))
      expect(found.join("\n")).toMatch(/workflows\.yaml:2:11 workflows\[0\]\.name expected a name of 1–30 lowercase/)
      expect(found.join("\n")).toMatch(/workflows\.yaml:4:5 workflows\[1\]\.name `name` is required/)
      expect(found.join("\n")).toMatch(/variables\.yaml:2:9 variables\.size /)
      expect(found.join("\n")).toMatch(/providers\.yaml:2:5 providers\[0\]\.commands `commands` is required/)
      expect(yield* issues(plan({ [WF]: pipeline }, "trian"))).toEqual([
        "(command line):1:1  no workflow named trian; did you mean train?; defined: evaluate, prepare, train"
      ])
      expect(yield* issues(Workflows.parseWorkflowFiles({}))).toEqual([
        `${WF}:1:1  no workflows: write them in ${WF} (or .dstack/workflows/*.yaml)`
      ])
    }))

  it.effect("a provider from another repository that was not fetched is named at its line", () =>
    Effect.gen(function*() {
      const text = "workflows:\n  - name: a\n    provider:\n      repo: https://example.com/p.git\n      name: curl\n"
      expect(yield* issues(plan({ [WF]: text }, "a"))).toEqual([
        `${WF}:4:13 workflows[0].provider.repo provider curl of https://example.com/p.git was not fetched: plan this workflow on the server`
      ])
    }))
})
