// Loading .dstack.yml files: every problem at once, with line:column, field path, plain-words
// message and did-you-mean hints; YAML syntax errors; reading and finding files on disk.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import {
  ConfigurationError,
  didYouMean,
  findConfigurationFiles,
  loadConfiguration,
  parseConfiguration
} from "../../src/config/index.ts"

const issuesOf = (text: string) =>
  parseConfiguration(text, { file: "app.dstack.yml" }).pipe(
    Effect.flip,
    Effect.map((e) => e.issues.map((i) => `${i.line}:${i.column} ${i.path} | ${i.message}`))
  )

describe("parseConfiguration", () => {
  it.effect("decodes a valid task", () =>
    Effect.gen(function* () {
      const c = yield* parseConfiguration("type: task\ncommands:\n  - echo hi\nresources:\n  gpu: A100:2\n")
      expect(c.type).toBe("task")
      if (c.type !== "task") return
      expect(c.commands).toEqual(["echo hi"])
      expect(c.resources.gpu).toEqual({ name: ["A100"], count: { min: 2, max: 2 } })
    })
  )

  it.effect("reports several mistakes at once with their positions and paths", () =>
    Effect.gen(function* () {
      const text = [
        "type: task", //                1
        "workdir: /src", //             2
        "commands:", //                 3
        "  - echo ok", //               4
        "  - 42", //                    5
        "resources:", //                6
        "  memory: 8XB..", //           7
        "  gpu:", //                    8
        "    name: A100", //            9
        "    memroy: 80GB", //          10
        "max_duration: forever", //     11
        "spot_policy: sometimes", //    12
        "ports: [8080, \"99999\"]" //   13
      ].join("\n")
      expect(yield* issuesOf(text)).toEqual([
        "2:1 workdir | unknown key `workdir`; did you mean `working_dir`?",
        "5:5 commands[1] | expected string, got 42",
        "7:11 resources.memory | expected a size or a range of sizes such as 24GB, 24GB..80GB, 24GB.. or ..80GB, got \"8XB..\" (bad lower bound \"8XB\")",
        "10:5 resources.gpu.memroy | unknown key `memroy`; did you mean `memory`?",
        "11:15 max_duration | expected a duration such as 90s, 5m, 2h, 1d or 1w (a number of seconds), or off, got \"forever\"",
        "12:14 spot_policy | expected one of spot, on-demand, auto, got \"sometimes\"",
        "13:15 ports[1] | expected a port such as 80, \"8080:80\" or \"*:80\", got \"99999\""
      ])
    })
  )

  it.effect("the error message lists every issue like a compiler", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(parseConfiguration("type: service\nport: 80\nreplicas: 1..3\nimagee: x\n", { file: "svc.yml" }))
      expect(error).toBeInstanceOf(ConfigurationError)
      expect(error._tag).toBe("ConfigurationError")
      expect(error.message).toBe(
        ["svc.yml: 1 problem in the configuration", "  svc.yml:4:1  imagee  unknown key `imagee`; did you mean `image`?"].join("\n")
      )
    })
  )

  it.effect("cross-field rules point at the offending key", () =>
    Effect.gen(function* () {
      expect(yield* issuesOf("type: service\nport: 80\nreplicas: 1..3\n")).toEqual([
        "3:11 replicas | a range of replicas needs scaling rules: add scaling: {metric: rps, target: N}"
      ])
      expect(yield* issuesOf("type: task\nimage: ubuntu\npython: 3.10\n")).toEqual([
        "3:9 python | python and image are mutually exclusive: install Python in your image, or drop image"
      ])
    })
  )

  it.effect("a missing required key points at the enclosing map", () =>
    Effect.gen(function* () {
      expect(yield* issuesOf("type: service\ncommands: [serve]\n")).toEqual(["1:1 port | `port` is required"])
      expect(yield* issuesOf("type: task\nregistry_auth:\n  username: me\n")).toEqual([
        "3:3 registry_auth.password | `password` is required"
      ])
    })
  )

  it.effect("a missing or unknown type is explained", () =>
    Effect.gen(function* () {
      expect(yield* issuesOf("commands: [x]\n")).toEqual(["1:1 type | type is missing: add type: task | service | dev-environment | fleet"])
      expect(yield* issuesOf("# a comment\ntype: taks\n")).toEqual([
        "2:7 type | expected one of task, service, dev-environment, fleet, got \"taks\""
      ])
    })
  )

  it.effect("YAML syntax errors and duplicate keys have positions", () =>
    Effect.gen(function* () {
      expect(yield* issuesOf("type: task\ncommands: [echo\n")).toEqual([
        "3:1  | YAML syntax: Flow sequence in block collection must be sufficiently indented and end with a ]"
      ])
      const dup = yield* issuesOf("type: task\nimage: a\nimage: b\n")
      expect(dup).toEqual(["3:1  | YAML syntax: Map keys must be unique"])
      expect(yield* issuesOf("")).toEqual(["1:1  | the file is empty"])
    })
  )
})

describe("env names without a value", () => {
  const text = "type: task\ncommands: [echo hi]\nenv:\n  - A=1\n  - HF_TOKEN\n  - WANDB_KEY\n"
  it.effect("take their values from the client's environment", () =>
    Effect.gen(function* () {
      const c = yield* parseConfiguration(text, { supportedOnly: true, clientEnv: { HF_TOKEN: "hf-1", WANDB_KEY: "", OTHER: "x" } })
      expect(c.type === "task" && c.env).toEqual({ A: "1", HF_TOKEN: "hf-1", WANDB_KEY: "" })
      // The map form's empty value too.
      const map = yield* parseConfiguration("type: task\ncommands: [echo hi]\nenv:\n  HF_TOKEN:\n", { clientEnv: { HF_TOKEN: "hf-2" } })
      expect(map.type === "task" && map.env).toEqual({ HF_TOKEN: "hf-2" })
    }))

  it.effect("a name the client's environment lacks is an error at its line, once", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(parseConfiguration(text, { file: "app.dstack.yml", supportedOnly: true, clientEnv: { HF_TOKEN: "hf-1" } }))
      expect(error.issues.map((i) => `${i.line} ${i.path} | ${i.message}`)).toEqual([
        "6 env[2] | Environment variable WANDB_KEY is not set: `env.WANDB_KEY` has no value in the file, so it takes the one of the environment it is applied from; set it there or give it a value"
      ])
    }))

  it.effect("without a client environment they stay without a value, and a check of what this build carries out refuses them", () =>
    Effect.gen(function* () {
      const c = yield* parseConfiguration(text)
      expect(c.type === "task" && c.env).toEqual({ A: "1", HF_TOKEN: null, WANDB_KEY: null })
      const error = yield* Effect.flip(parseConfiguration(text, { supportedOnly: true }))
      expect(error.issues.map((i) => i.path)).toEqual(["env.HF_TOKEN", "env.WANDB_KEY"])
      expect(error.issues[0].message).toMatch(/`env.HF_TOKEN` has no value: .*`dstack apply` fills it/)
    }))
})

describe("didYouMean", () => {
  it("suggests close keys and nothing for unrelated words", () => {
    const keys = ["working_dir", "image", "commands", "max_duration", "resources"]
    expect(didYouMean("workdir", keys)).toBe("working_dir")
    expect(didYouMean("imgae", keys)).toBe("image")
    expect(didYouMean("max-duration", keys)).toBe("max_duration")
    expect(didYouMean("command", keys)).toBe("commands")
    expect(didYouMean("banana", keys)).toBeUndefined()
  })
})

describe("files", () => {
  const withDir = <A, E>(f: (dir: string) => Effect.Effect<A, E>) =>
    Effect.acquireUseRelease(
      Effect.promise(() => mkdtemp(join(tmpdir(), "dstack-cfg-"))),
      f,
      (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
    )

  it.effect("loadConfiguration reads a file and names it in errors", () =>
    withDir((dir) =>
      Effect.gen(function* () {
        const good = join(dir, ".dstack.yml")
        const bad = join(dir, "bad.dstack.yml")
        yield* Effect.promise(() => writeFile(good, "type: task\ncommands: [echo hi]\n"))
        yield* Effect.promise(() => writeFile(bad, "type: task\nnodes: 0\n"))
        expect((yield* loadConfiguration(good)).type).toBe("task")
        const error = yield* Effect.flip(loadConfiguration(bad))
        expect(error.issues).toEqual([
          { file: bad, line: 2, column: 8, path: "nodes", message: "expected a number of nodes (a whole number ≥ 1), got 0" }
        ])
        const missing = yield* Effect.either(loadConfiguration(join(dir, "nope.yml")))
        expect(Either.isLeft(missing) && missing.left.issues[0].message).toMatch(/^cannot read the file: .*ENOENT/)
      })
    )
  )

  it.effect("findConfigurationFiles finds .dstack.yml and *.dstack.yml", () =>
    withDir((dir) =>
      Effect.gen(function* () {
        yield* Effect.promise(async () => {
          await mkdir(join(dir, "sub"))
          await mkdir(join(dir, "node_modules"))
          for (const f of [".dstack.yml", "train.dstack.yml", "serve.dstack.yaml", "other.yml", "dstack.yml", "sub/.dstack.yml", "node_modules/x.dstack.yml"]) {
            await writeFile(join(dir, f), "type: task\n")
          }
        })
        expect(yield* findConfigurationFiles(dir)).toEqual(
          [".dstack.yml", "serve.dstack.yaml", "train.dstack.yml"].map((f) => join(dir, f))
        )
        expect(yield* findConfigurationFiles(dir, { recursive: true })).toEqual(
          [".dstack.yml", "serve.dstack.yaml", "sub/.dstack.yml", "train.dstack.yml"].map((f) => join(dir, f))
        )
      })
    )
  )
})
