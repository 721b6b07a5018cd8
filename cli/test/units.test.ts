// In-process tests of the CLI's pieces: global flag extraction, --since parsing, tables.
import { describe, expect, it } from "vitest"
import { extractGlobals } from "../src/main.ts"
import { parseNumber, parseSince } from "../src/commands/logs.ts"
import { table } from "../src/ui.ts"
import { CliError } from "../src/context.ts"

describe("extractGlobals", () => {
  it("takes --debug and --project from anywhere before --", () => {
    expect(extractGlobals(["ps", "--project", "p1", "-a", "--debug"])).toEqual({ debug: true, project: "p1", rest: ["ps", "-a"] })
    expect(extractGlobals(["--project=p2", "logs", "r", "--", "--debug"])).toEqual({ debug: false, project: "p2", rest: ["logs", "r", "--", "--debug"] })
  })
  it("fails with a usage error when --project has no value", () => {
    expect(() => extractGlobals(["ps", "--project"])).toThrow(CliError)
    expect(() => extractGlobals(["ps", "--project", "-a"])).toThrow("--project needs a project name")
  })
})

describe("parseSince", () => {
  const now = new Date("2026-01-02T00:00:00Z")
  it("reads durations back from now and dates", () => {
    expect(parseSince("30s", now).toISOString()).toBe("2026-01-01T23:59:30.000Z")
    expect(parseSince("2h", now).toISOString()).toBe("2026-01-01T22:00:00.000Z")
    expect(parseSince("1d", now).toISOString()).toBe("2026-01-01T00:00:00.000Z")
    expect(parseSince("2025-12-31T10:00:00Z", now).toISOString()).toBe("2025-12-31T10:00:00.000Z")
  })
  it("names the flag when the value is neither", () => {
    expect(() => parseSince("soon", now)).toThrow(/--since: "soon"/)
  })
})

describe("parseNumber (dstack logs --job/--replica)", () => {
  it("reads a whole number, and nothing when the flag is absent", () => {
    expect(parseNumber("--job", "1")).toBe(1)
    expect(parseNumber("--job", "0")).toBe(0)
    expect(parseNumber("--job", undefined)).toBeUndefined()
  })
  it("names the flag when the value is not a whole number", () => {
    for (const bad of ["x", "-1", "1.5", ""]) expect(() => parseNumber("--job", bad)).toThrow(/--job: ".*" is not a number/)
  })
})

describe("table", () => {
  it("aligns columns under the header without trailing spaces", () => {
    expect(table(["NAME", "STATUS"], [["a-long-name", "running"], ["b", "done"]])).toBe("NAME         STATUS\na-long-name  running\nb            done")
  })
})

describe("docs/cli.md", () => {
  it("is what cli/scripts/cli-docs.ts generates from the command definitions", async () => {
    const { readFile } = await import("node:fs/promises")
    const { DOCS_PATH, renderCliDocs } = await import("../scripts/cli-docs.ts")
    const generated = await renderCliDocs()
    expect(generated).toContain("| `-x`, `--abort` |")
    expect(await readFile(DOCS_PATH, "utf8"), "docs/cli.md is stale: run `npx tsx cli/scripts/cli-docs.ts`").toBe(generated)
  })
})

describe("defaultServerOptions: the engine's settings from the environment", () => {
  const engineOf = async (env: Record<string, string>) => (await import("../src/defaultBuild.ts")).defaultServerOptions("/tmp/unused", undefined, { env }).engine
  it("takes DSTACK_SERVER_LOG_QUOTA_PER_JOB_HOUR (bytes, 0: no quota) and DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS", async () => {
    expect(await engineOf({})).toEqual({})
    expect(await engineOf({ DSTACK_SERVER_LOG_QUOTA_PER_JOB_HOUR: "1048576", DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS: "30" })).toEqual({ logQuotaPerJobHour: 1048576, unreachableMs: 30_000 })
    expect(await engineOf({ DSTACK_SERVER_LOG_QUOTA_PER_JOB_HOUR: "0" })).toEqual({ logQuotaPerJobHour: 0 })
  })
  it("refuses a quota that is not a whole number of bytes, naming the variable", async () => {
    for (const text of ["-1", "1.5", "50MB", "9".repeat(30)]) {
      await expect(engineOf({ DSTACK_SERVER_LOG_QUOTA_PER_JOB_HOUR: text })).rejects.toThrow(/DSTACK_SERVER_LOG_QUOTA_PER_JOB_HOUR: .* is not a whole number of bytes/)
    }
  })
})
