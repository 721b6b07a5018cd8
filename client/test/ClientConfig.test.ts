import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Either, Exit } from "effect"
import { mkdtemp, readFile, rm, stat, writeFile, mkdir } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { removeProject, resolveProject, setDefaultProject, upsertProject } from "../src/ClientConfig.ts"
import type { ClientConfig } from "../src/ClientConfig.ts"
import { ClientConfigError } from "../src/ClientError.ts"
import { defaultConfigPath, loadConfigFile, resolveFromConfigFile, saveConfigFile } from "../src/ConfigFile.ts"
import { Client } from "../src/node.ts"

const two: ClientConfig = {
  projects: [
    { name: "main", url: "http://a:3000", token: "ta", default: true },
    { name: "research", url: "http://b:3000/", token: "tb", default: false }
  ]
}
const P = "/home/u/.dstack/config.yml"

const left = <A>(e: Either.Either<A, ClientConfigError>): ClientConfigError => {
  if (Either.isRight(e)) throw new Error(`expected an error, got ${JSON.stringify(e.right)}`)
  return e.left
}

describe("resolveProject", () => {
  it("picks the default project, or the one named by option or DSTACK_PROJECT", () => {
    expect(resolveProject(two, {}, {}, P)).toEqual(Either.right({ name: "main", url: "http://a:3000", token: "ta" }))
    expect(resolveProject(two, { projectName: "research" }, {}, P)).toEqual(Either.right({ name: "research", url: "http://b:3000", token: "tb" }))
    expect(resolveProject(two, {}, { DSTACK_PROJECT: "research" }, P)).toEqual(Either.right({ name: "research", url: "http://b:3000", token: "tb" }))
    // an explicit option wins over the environment
    expect(Either.getOrThrow(resolveProject(two, { projectName: "main" }, { DSTACK_PROJECT: "research" }, P)).name).toBe("main")
  })
  it("lets env and options override the URL and token of the chosen project", () => {
    expect(Either.getOrThrow(resolveProject(two, {}, { DSTACK_TOKEN: "env-token" }, P))).toEqual({ name: "main", url: "http://a:3000", token: "env-token" })
    expect(Either.getOrThrow(resolveProject(two, { serverUrl: "http://c:1/" }, { DSTACK_SERVER_URL: "http://d:1" }, P)).url).toBe("http://c:1")
  })
  it("needs no file when URL and token are given, and defaults the project to main", () => {
    expect(Either.getOrThrow(resolveProject(undefined, {}, { DSTACK_SERVER_URL: "http://x:3000", DSTACK_TOKEN: "t" }, P))).toEqual({ name: "main", url: "http://x:3000", token: "t" })
    expect(Either.getOrThrow(resolveProject(undefined, { serverUrl: "http://x", userToken: "t", projectName: "p" }, {}, P)).name).toBe("p")
  })
  it("says to run `dstack project add` when nothing is configured", () => {
    const e = left(resolveProject(undefined, {}, {}, P))
    expect(e.reason).toBe("NoConfig")
    expect(e.message).toContain(`${P} does not exist`)
    expect(e.message).toContain("dstack project add")
    expect(left(resolveProject({ projects: [] }, {}, {}, P)).message).toContain("lists none")
  })
  it("names the missing project and the configured ones", () => {
    const e = left(resolveProject(two, { projectName: "ghost" }, {}, P))
    expect(e.reason).toBe("NoProject")
    expect(e.message).toContain("Project ghost is not configured")
    expect(e.message).toContain("main, research")
  })
  it("asks for a project when several are configured and none is default", () => {
    const noDefault = { projects: two.projects.map((p) => ({ ...p, default: false })) }
    expect(left(resolveProject(noDefault, {}, {}, P)).message).toContain("dstack project set-default")
    // with a single project it is the default
    expect(Either.getOrThrow(resolveProject({ projects: [two.projects[1]] }, {}, {}, P)).name).toBe("research")
  })
  it("rejects a server URL that is not http(s)", () => {
    expect(left(resolveProject(undefined, { serverUrl: "ftp://x", userToken: "t" }, {}, P)).message).toContain("not an http(s) URL")
    expect(left(resolveProject(undefined, { serverUrl: "nope", userToken: "t" }, {}, P)).message).toContain("is not a URL")
  })
})

describe("editing the config", () => {
  it("adds a project keeping the others, and moves the default when asked", () => {
    const added = upsertProject(two, { name: "new", url: "http://n/", token: "tn" }, false)
    expect(added.projects.map((p) => [p.name, p.default])).toEqual([["main", true], ["research", false], ["new", false]])
    expect(added.projects[2].url).toBe("http://n")
    const asDefault = upsertProject(two, { name: "new", url: "http://n", token: "tn" }, true)
    expect(asDefault.projects.filter((p) => p.default).map((p) => p.name)).toEqual(["new"])
    // the first project ever added becomes the default
    expect(upsertProject({ projects: [] }, { name: "a", url: "http://a", token: "t" }, false).projects[0].default).toBe(true)
  })
  it("replaces a project in place and keeps it default", () => {
    const replaced = upsertProject(two, { name: "main", url: "http://a2", token: "ta2" }, false)
    expect(replaced.projects.map((p) => [p.name, p.url, p.default])).toEqual([["main", "http://a2", true], ["research", "http://b:3000/", false]])
  })
  it("sets the default and removes projects; undefined for an unknown name", () => {
    expect(setDefaultProject(two, "research")!.projects.map((p) => p.default)).toEqual([false, true])
    expect(setDefaultProject(two, "ghost")).toBeUndefined()
    expect(removeProject(two, "main")!.projects.map((p) => p.name)).toEqual(["research"])
    expect(removeProject(two, "ghost")).toBeUndefined()
  })
})

describe("the config file", () => {
  let home: string
  beforeAll(async () => {
    home = await mkdtemp(join(tmpdir(), "dstack-client-"))
  })
  afterAll(async () => {
    await rm(home, { recursive: true, force: true })
  })

  it("lives in $HOME/.dstack/config.yml", () => {
    expect(defaultConfigPath({ HOME: "/h" })).toBe(join("/h", ".dstack", "config.yml"))
  })
  it("is undefined when missing, and round-trips in the upstream format, owner-only", async () => {
    const path = defaultConfigPath({ HOME: home })
    expect(await Effect.runPromise(loadConfigFile(path))).toBeUndefined()
    await Effect.runPromise(saveConfigFile(path, { ...two, other_key: 1 } as ClientConfig))
    const text = await readFile(path, "utf8")
    expect(text).toContain("projects:")
    expect(text).toContain("- name: main")
    expect(text).toContain("default: true")
    expect((await stat(path)).mode & 0o777).toBe(0o600)
    const back = await Effect.runPromise(loadConfigFile(path))
    expect(back!.projects).toEqual(two.projects)
    expect((back as Record<string, unknown>).other_key).toBe(1)
  })
  it("reports malformed YAML and missing fields with the path", async () => {
    const dir = join(home, "bad")
    await mkdir(dir, { recursive: true })
    const badYaml = join(dir, "a.yml")
    await writeFile(badYaml, "projects: [\n  - name: x\n  url")
    const e1 = Exit.causeOption(await Effect.runPromiseExit(loadConfigFile(badYaml)))
    expect(JSON.stringify(e1)).toContain("is not valid YAML")
    const missing = join(dir, "b.yml")
    await writeFile(missing, "projects:\n  - name: x\n    url: http://x\n")
    const exit = await Effect.runPromiseExit(loadConfigFile(missing))
    expect(Exit.isFailure(exit)).toBe(true)
    const err = Exit.isFailure(exit) ? (exit.cause as any).error as ClientConfigError : undefined
    expect(err?.reason).toBe("Invalid")
    expect(err?.message).toContain("projects.0.token")
  })
  it("resolves through the file with env overrides, and skips a broken file when URL and token are given", async () => {
    const h2 = join(home, "h2")
    const path = defaultConfigPath({ HOME: h2 })
    await Effect.runPromise(saveConfigFile(path, two))
    expect(await Effect.runPromise(resolveFromConfigFile({}, { HOME: h2, DSTACK_PROJECT: "research" }))).toEqual({ name: "research", url: "http://b:3000", token: "tb" })
    await writeFile(path, ":: not yaml [")
    const r = await Effect.runPromise(resolveFromConfigFile({}, { HOME: h2, DSTACK_SERVER_URL: "http://e:1", DSTACK_TOKEN: "te" }))
    expect(r).toEqual({ name: "main", url: "http://e:1", token: "te" })
  })
  it("Client.fromConfig rejects with the ClientConfigError itself", async () => {
    const err = await Client.fromConfig({ env: { HOME: join(home, "empty") } }).catch((e) => e)
    expect(err).toBeInstanceOf(ClientConfigError)
    expect(err.message).toContain("dstack project add")
    const client = await Client.fromConfig({ env: { HOME: join(home, "empty"), DSTACK_SERVER_URL: "http://s:3000/", DSTACK_TOKEN: "t", DSTACK_PROJECT: "p" } })
    expect([client.url, client.project]).toEqual(["http://s:3000", "p"])
  })
})
