// The `dstack` command run as a real child process (node cli/bin/dstack.mjs) against a real
// API server on a loopback port, with a temporary HOME: stdout, stderr and exit codes.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { execFile } from "node:child_process"
import { mkdtemp, readFile, rm, writeFile, mkdir } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { fakeRuns, startTestServer, TOKENS, unreachableUrl } from "../../client/test/support.ts"
import type { TestServer } from "../../client/test/support.ts"
import { CLI } from "../../test/support/cli.ts"

const BIN = CLI
const ROOT = fileURLToPath(new URL("../..", import.meta.url))

interface Result {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

let server: TestServer
let tmp: string
beforeAll(async () => {
  server = await startTestServer()
  tmp = await mkdtemp(join(tmpdir(), "dstack-cli-"))
})
afterAll(async () => {
  await server?.close()
  await rm(tmp, { recursive: true, force: true })
})

let homes = 0
const newHome = async () => {
  const home = join(tmp, `home${homes++}`)
  await mkdir(home, { recursive: true })
  return home
}

const dstack = (home: string, args: ReadonlyArray<string>, env: Record<string, string> = {}): Promise<Result> =>
  new Promise((resolve) => {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("DSTACK_")))
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...clean, HOME: home, NO_COLOR: "1", ...env }, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? -1) : 0, stdout, stderr })
    })
  })

const oneErrorLine = (r: Result) => {
  const lines = r.stderr.trim().split("\n")
  expect(lines[0]).toMatch(/^✗ /)
  expect(r.stderr).not.toMatch(/^\s+at /m)
  return lines[0]
}

// Each spawn starts Node with tsx (seconds on a loaded 2-core machine), hence the long timeout.
describe("dstack CLI", { timeout: 180_000 }, () => {
  it("prints its version and its usage", async () => {
    const home = await newHome()
    const version = await dstack(home, ["--version"])
    expect(version).toMatchObject({ code: 0, stdout: "0.1.0\n" })
    const help = await dstack(home, ["ps", "--help"])
    expect(help.code).toBe(0)
    expect(help.stdout).toContain("dstack ps")
    expect(help.stdout).toContain("--all")
    expect(help.stdout).not.toContain("\u001B[")
  })

  it("adds projects after checking them on the server, lists them and switches the default", async () => {
    const home = await newHome()
    const add = await dstack(home, ["project", "add", "--name", "main", "--url", server.url + "/", "--token", TOKENS.alice])
    expect(add.stderr).toBe("")
    expect(add.code).toBe(0)
    expect(add.stdout).toContain(`✓ Project main on ${server.url} (user alice) saved`)
    const second = await dstack(home, ["project", "add", "--name", "research", "--url", server.url, "--token", TOKENS.alice, "--no-default"])
    expect(second.code).toBe(0)
    const config = await readFile(join(home, ".dstack", "config.yml"), "utf8")
    expect(config).toMatch(/- name: main\n\s+url: http:\/\/127\.0\.0\.1:\d+\n\s+token: tok-alice\n\s+default: true/)
    expect(config).toMatch(/- name: research[\s\S]*default: false/)
    const list = await dstack(home, ["project", "list"])
    expect(list.code).toBe(0)
    expect(list.stdout.split("\n")[0]).toMatch(/^PROJECT\s+URL\s+TOKEN\s+DEFAULT$/)
    expect(list.stdout).toMatch(/main\s+http:\/\/127\.0\.0\.1:\d+\s+tok-…ce\s+yes/)
    expect(list.stdout).not.toContain(TOKENS.alice)
    const setDefault = await dstack(home, ["project", "set-default", "research"])
    expect(setDefault).toMatchObject({ code: 0, stdout: "✓ Default project: research\n" })
    expect((await dstack(home, ["project", "list"])).stdout).toMatch(/research\s+\S+\s+\S+\s+yes/)
    // replacing a project with another token needs -y when there is no terminal
    const replace = await dstack(home, ["project", "add", "--name", "main", "--url", server.url, "--token", TOKENS.admin])
    expect(replace.code).toBe(2)
    expect(oneErrorLine(replace)).toContain("Pass -y")
    expect((await dstack(home, ["project", "add", "--name", "main", "--url", server.url, "--token", TOKENS.admin, "-y"])).code).toBe(0)
    expect(await readFile(join(home, ".dstack", "config.yml"), "utf8")).toContain("token: tok-admin")
  })

  it("refuses to save a project the server rejects, with one line each", async () => {
    const home = await newHome()
    const badToken = await dstack(home, ["project", "add", "--name", "main", "--url", server.url, "--token", "wrong"])
    expect(badToken.code).toBe(1)
    expect(oneErrorLine(badToken)).toBe(`✗ Invalid token: the server at ${server.url} does not accept the token (check it with \`dstack project add\`)`)
    const ghost = await dstack(home, ["project", "add", "--name", "ghost", "--url", server.url, "--token", TOKENS.alice])
    expect(ghost.code).toBe(1)
    expect(oneErrorLine(ghost)).toBe(`✗ Project ghost not found on ${server.url}`)
    const notMember = await dstack(home, ["project", "add", "--name", "main", "--url", server.url, "--token", TOKENS.bob])
    expect(oneErrorLine(notMember)).toBe(`✗ User bob is not a member of project main on ${server.url}`)
    const badUrl = await dstack(home, ["project", "add", "--name", "main", "--url", "localhost:3000", "--token", "t"])
    expect(badUrl.code).toBe(2)
    expect(oneErrorLine(badUrl)).toContain("--url:")
    await expect(readFile(join(home, ".dstack", "config.yml"), "utf8")).rejects.toThrow()
  })

  it("says when the server cannot be reached, with a stack trace only under --debug", async () => {
    const home = await newHome()
    const url = await unreachableUrl()
    const plain = await dstack(home, ["project", "add", "--name", "main", "--url", url, "--token", "t"])
    expect(plain.code).toBe(1)
    expect(oneErrorLine(plain)).toMatch(new RegExp(`^✗ cannot reach the dstack server at ${url.replace(/\./g, "\\.")}: `))
    const debug = await dstack(home, ["--debug", "project", "add", "--name", "main", "--url", url, "--token", "t"])
    expect(debug.code).toBe(1)
    expect(debug.stderr.split("\n")[0]).toBe(plain.stderr.split("\n")[0])
    expect(debug.stderr).toMatch(/^\s+at /m)
  })

  it("tells how to configure a project when none is, and names an unknown --project", async () => {
    const home = await newHome()
    const none = await dstack(home, ["ps"])
    expect(none.code).toBe(1)
    expect(oneErrorLine(none)).toContain("run `dstack project add --name NAME --url URL --token TOKEN`")
    await mkdir(join(home, ".dstack"))
    await writeFile(join(home, ".dstack", "config.yml"), `projects:\n  - name: main\n    url: ${server.url}\n    token: ${TOKENS.alice}\n    default: true\n`)
    const ghost = await dstack(home, ["ps", "--project", "ghost"])
    expect(ghost.code).toBe(1)
    expect(oneErrorLine(ghost)).toContain("Project ghost is not configured")
    const setGhost = await dstack(home, ["project", "set-default", "ghost"])
    expect(setGhost.code).toBe(1)
    expect(oneErrorLine(setGhost)).toContain("Project ghost is not configured in")
  })

  it("lists, follows, stops and deletes runs, and checks configurations before applying", async () => {
    const home = await newHome()
    await mkdir(join(home, ".dstack"))
    await writeFile(join(home, ".dstack", "config.yml"), `projects:\n  - name: main\n    url: ${server.url}\n    token: ${TOKENS.alice}\n`)
    const ps = await dstack(home, ["ps"])
    expect(ps).toMatchObject({ code: 0, stderr: "" })
    expect(ps.stdout).toMatch(/^NAME\s+STATUS\s+SUBMITTED\nlive-run\s+running\s+\d+d ago\n$/)
    const json = await dstack(home, ["ps", "-a", "--json"])
    expect(json.code).toBe(0)
    expect(JSON.parse(json.stdout).map((r: any) => [r.run_spec.run_name, r.status])).toEqual([["done-run", "done"], ["live-run", "running"]])
    const logs = await dstack(home, ["logs", "done-run"])
    expect(logs).toMatchObject({ code: 0, stdout: "line 0\nline 1\nline 2\n" })
    const follow = await dstack(home, ["logs", "live-run", "-f"])
    expect(follow).toMatchObject({ code: 0, stdout: "line 0\nline 1\nline 2\n" })
    const ghost = await dstack(home, ["logs", "ghost"])
    expect(ghost.code).toBe(1)
    expect(oneErrorLine(ghost)).toBe("✗ Run ghost not found in project main")
    const stop = await dstack(home, ["stop", "live-run", "-x", "-y"])
    expect(stop).toMatchObject({ code: 0, stdout: "✓ Run live-run aborted\n" })
    expect(fakeRuns.stopped.at(-1)).toEqual({ names: ["live-run"], abort: true })
    const del = await dstack(home, ["delete", "done-run", "-y"])
    expect(del).toMatchObject({ code: 0, stdout: "✓ Run done-run deleted\n" })
    const apply = await dstack(home, ["apply", "-f", "missing.dstack.yml", "-y", "-d"])
    expect(apply.code).toBe(1)
    expect(oneErrorLine(apply)).toBe("✗ Configuration file missing.dstack.yml does not exist")
    const bad = join(home, "bad.dstack.yml")
    await writeFile(bad, "type: task\ncommands: [echo hi]\nworkdir: x\n")
    const invalid = await dstack(home, ["apply", "-f", bad, "-y"])
    expect(invalid.code).toBe(1)
    expect(invalid.stderr).toBe(`✗ ${bad}: 1 problem in the configuration\n  ${bad}:3:1  workdir  unknown key \`workdir\`; did you mean \`working_dir\`?\n`)
    const good = join(home, "good.dstack.yml")
    await writeFile(good, "type: task\nname: good-run\ncommands: [echo hi]\n")
    const applied = await dstack(home, ["apply", "-f", good, "-y", "-d"])
    expect(applied.stderr).toBe("")
    expect(applied).toMatchObject({ code: 0, stdout: "Project main, user alice: create good-run, 0 job(s), 0 offer(s)\nPROPERTY     VALUE\nResources    cpu=2.. memory=8GB.. disk=100GB..\nSpot policy  on-demand\nExecutor: process (no image: the commands run under bash on the host)\nRun good-run submitted\n" })
    // apply packed the working directory, registered it and uploaded it by hash
    const planned = fakeRuns.plans[fakeRuns.plans.length - 1] as { run_spec: { repo_code_hash?: string; repo_data: { repo_type: string } } }
    expect(planned.run_spec.repo_data.repo_type).toBe("local")
    expect(fakeRuns.uploads.get(planned.run_spec.repo_code_hash!)).toBeGreaterThan(0)
    // A name under `env` without a value takes its value from the environment apply runs in, as upstream's.
    const bare = join(home, "bare.dstack.yml")
    await writeFile(bare, "type: task\nname: bare-run\ncommands: [echo hi]\nenv:\n  - A=1\n  - HF_TOKEN\n")
    const filled = await dstack(home, ["apply", "-f", bare, "-y", "-d"], { HF_TOKEN: "from-the-shell" })
    expect(filled).toMatchObject({ code: 0, stderr: "" })
    const sent = fakeRuns.plans[fakeRuns.plans.length - 1] as { run_spec: { configuration: { env: unknown } } }
    expect(sent.run_spec.configuration.env).toEqual({ A: "1", HF_TOKEN: "from-the-shell" })
    // Set but empty is a value (as upstream).
    const empty = await dstack(home, ["apply", "-f", bare, "-y", "-d"], { HF_TOKEN: "" })
    expect(empty.code).toBe(0)
    expect((fakeRuns.plans[fakeRuns.plans.length - 1] as typeof sent).run_spec.configuration.env).toEqual({ A: "1", HF_TOKEN: "" })
    const missing = await new Promise<Result>((resolve) => {
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("DSTACK_") && k !== "HF_TOKEN"))
      execFile(process.execPath, [BIN, "apply", "-f", bare, "-y", "-d"], { cwd: ROOT, env: { ...env, HOME: home, NO_COLOR: "1" }, timeout: 60_000 }, (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? -1) : 0, stdout, stderr }))
    })
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain(`${bare}:6:5  env[1]  Environment variable HF_TOKEN is not set`)
    const offer = await dstack(home, ["offer", "--gpu", "A100"])
    expect(offer.code).toBe(1)
    expect(oneErrorLine(offer)).toContain("No offers")
  })

  it("answers usage errors with exit code 2", async () => {
    const home = await newHome()
    const missing = await dstack(home, ["project", "add", "--url", "http://x"])
    expect(missing.code).toBe(2)
    expect(oneErrorLine(missing)).toContain("--name")
    const unknownFlag = await dstack(home, ["ps", "--bogus"])
    expect(unknownFlag.code).toBe(2)
    expect(oneErrorLine(unknownFlag)).toBe("✗ Unknown option --bogus for `dstack ps`")
    // A negative number after an option that takes a value is its value (as upstream's argparse reads it), judged by the option.
    const file = join(home, "task.dstack.yml")
    await writeFile(file, "type: task\ncommands: [echo hi]\n")
    const negative = await dstack(home, ["apply", "-f", file, "--max-price", "-1", "-y"])
    expect(negative.code).toBe(2)
    expect(oneErrorLine(negative)).toBe("✗ argument --max-price: expected a positive price in dollars per hour, got -1")
    const offerNegative = await dstack(home, ["offer", "--max-price", "-0.5"])
    expect(offerNegative.code).toBe(2)
    expect(oneErrorLine(offerNegative)).toBe('✗ --max-price: "-0.5" is not a price in dollars')
    const bareNumber = await dstack(home, ["ps", "-1"])
    expect(bareNumber.code).toBe(2)
    expect(oneErrorLine(bareNumber)).toBe("✗ Unknown option -1 for `dstack ps`")
    const unknownCommand = await dstack(home, ["frobnicate"])
    expect(unknownCommand.code).toBe(2)
    expect(oneErrorLine(unknownCommand)).toContain("frobnicate")
    const noRun = await dstack(home, ["logs"])
    expect(noRun.code).toBe(2)
    expect(oneErrorLine(noRun)).toContain("RUN")
    const since = await dstack(home, ["logs", "r1", "--since", "yesterday-ish"])
    expect(since.code).toBe(2)
    expect(oneErrorLine(since)).toContain("--since")
    const stop = await dstack(home, ["stop", "r1"], { DSTACK_SERVER_URL: server.url, DSTACK_TOKEN: TOKENS.alice })
    expect(stop.code).toBe(2)
    expect(oneErrorLine(stop)).toContain("Pass -y")
  })
})
