// README.md's "first five minutes", run as written: `dstack server` as a child process (in a
// temporary HOME and DSTACK_SERVER_DIR), then every `npx dstack …`, `curl …` and
// `sudo scripts/netns-hosts.sh …` line of the tour's shell blocks, in order, from the repository
// root (the script without sudo: the test runs as root). `dstack attach` stays in the
// background while the lines after it run, as in a second terminal; `/tmp/` in an output path
// (`-o`) becomes a temporary directory. A line fails the test if it exits non-zero (except an
// `offer` that says why nothing fits). The lines from `netns-hosts.sh up` to `down` (a fleet of a
// network-namespace host) need root and `ip`: skipped with the reason where they cannot run,
// failed under CI=true.
import { execFile, spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { RunnerCommand } from "@dstack-ts/backend-local"
import { describeWith, inCI } from "../support/components.ts"
import { NETNS_SCRIPT, netnsUnavailable } from "../support/netnsHosts.ts"

const root = fileURLToPath(new URL("../../", import.meta.url))
const readme = fs.readFileSync(path.join(root, "README.md"), "utf8")
const tour = readme.slice(readme.indexOf("## The first five minutes"), readme.indexOf("## What is here"))

/** The tour's shell lines, in order, each as its words (quotes removed, the comment dropped). */
const tourLines = (): Array<{ line: string; words: Array<string> }> =>
  [...tour.matchAll(/```sh\n([\s\S]*?)```/g)]
    .flatMap((m) => m[1].split("\n"))
    .map((line) => line.trim())
    .filter((line) => line.startsWith("npx dstack ") || line.startsWith("curl ") || line.startsWith("sudo scripts/netns-hosts.sh "))
    .map((line) => ({ line, words: [...line.replace(/\s+#.*$/, "").matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]) }))

/**
 * `dstack ARGS` on this runtime (the bin script on Node, the module itself on Deno): what
 * `npx dstack` runs in a checkout, as the tour says (not the built command of test/support/cli.ts).
 */
const dstackCommand = (args: ReadonlyArray<string>) =>
  "Deno" in globalThis
    ? RunnerCommand.forRuntime()(path.join(root, "cli/src/main.ts"), args)
    : { file: process.execPath, args: [path.join(root, "cli/bin/dstack.mjs"), ...args] }

const portFree = (port: number) =>
  new Promise<boolean>((resolve) => {
    const probe = net.createServer().once("error", () => resolve(false))
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)))
  })

/** Why the tour's fleet step (a netns host) cannot run here, or undefined. */
const netnsReason = await netnsUnavailable()
/** The netns host set the tour makes (`scripts/netns-hosts.sh up tour`). */
const TOUR_SET = "tour"

// The tour uses the README's fixed ports (3000 is replaced: the server takes a free one).
const busy = (await Promise.all([8000, 8080].map(async (p) => ((await portFree(p)) ? undefined : p)))).filter((p) => p !== undefined)

describe("README.md", () => {
  it("has the tour: server, a task, a port, logs, stop, push and pull of a dataframe and a plot, the web page, a fleet of a netns host", () => {
    const commands = tourLines().map((l) => l.words.slice(0, 3).join(" "))
    for (const expected of ["npx dstack server", "npx dstack apply", "npx dstack attach", "curl http://127.0.0.1:8080/", "npx dstack logs", "npx dstack stop", "npx dstack push", "npx dstack pull", "sudo scripts/netns-hosts.sh up", "npx dstack fleet", "sudo scripts/netns-hosts.sh down"]) {
      expect(commands.some((c) => c.startsWith(expected)), expected).toBe(true)
    }
    expect(tour).toMatch(/sales\.csv/)
    expect(tour).toMatch(/chart\.vl\.json/)
    expect(tour).toContain("/stacks/admin/examples/revenue")
    // The first two commands of the README stay what they are.
    expect(readme.split("\n").slice(2, 6).join("\n")).toBe(
      "```sh\nnpm ci && npm run demo        # a server on the embedded default and a sample run, end to end\nnpm ci && npm run test:all    # typecheck, every test on Node, the runtime's suites on Deno 2\n```"
    )
  })
})

describeWith("ports 8000 and 8080", busy.length === 0, `ports ${busy.join(", ")} are in use on this machine`, () => {
  describe("README.md's tour, run as written", () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-tour-home-"))
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-tour-out-"))
    const env: Record<string, string | undefined> = { ...process.env, HOME: home, DSTACK_SERVER_DIR: path.join(home, "server") }
    delete env.DSTACK_SERVER_URL
    delete env.DSTACK_TOKEN
    delete env.DSTACK_PROJECT
    delete env.DSTACK_SERVER_ADMIN_TOKEN
    let server: ChildProcess | undefined
    let url = ""
    const background: Array<ChildProcess> = []

    const stop = async (child: ChildProcess, signal: NodeJS.Signals) => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((resolve) => child.once("exit", resolve))
      child.kill(signal)
      const killer = setTimeout(() => child.kill("SIGKILL"), 20_000)
      await exited
      clearTimeout(killer)
    }

    beforeAll(async () => {
      // A set left by a killed run of this test would make the tour's `up` fail.
      if (netnsReason === undefined) await script(["down", TOUR_SET])
      // `npx dstack server`, on a free port instead of 3000.
      const command = dstackCommand(["server", "--port", "0"])
      server = spawn(command.file, [...command.args], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] })
      let output = ""
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`dstack server did not start in 90 s:\n${output}`)), 90_000)
        const onData = (d: Buffer) => {
          output += String(d)
          const m = /running at (http:\/\/\S+)/.exec(output)
          if (m) {
            clearTimeout(timer)
            url = m[1]
            resolve()
          }
        }
        server!.stdout!.on("data", onData)
        server!.stderr!.on("data", onData)
        server!.once("exit", (code) => reject(new Error(`dstack server exited with ${code}:\n${output}`)))
      })
    }, 120_000)

    afterAll(async () => {
      // The tour's netns host set, if a failed line left it (the script's down is idempotent).
      if (netnsReason === undefined) await new Promise((resolve) => execFile("bash", [NETNS_SCRIPT, "down", TOUR_SET], () => resolve(undefined)))
      for (const child of background) await stop(child, "SIGINT")
      if (server) await stop(server, "SIGTERM")
      fs.rmSync(home, { recursive: true, force: true })
      fs.rmSync(out, { recursive: true, force: true })
    }, 60_000)

    /** scripts/netns-hosts.sh ARGS, as root (the tour's `sudo`), its hosts' files in the default directory. */
    const script = (args: ReadonlyArray<string>) =>
      new Promise<{ code: number; output: string }>((resolve) => {
        const scriptEnv = { ...env }
        delete scriptEnv.DSTACK_NETNS_DIR
        execFile("bash", [NETNS_SCRIPT, ...args], { cwd: root, env: scriptEnv, timeout: 120_000 }, (error, stdout, stderr) =>
          resolve({ code: error ? 1 : 0, output: stdout + stderr }))
      })

    /** The command lines of the processes in the tour host's namespace that mention "runner". */
    const runnersOnHost = () =>
      new Promise<Array<string>>((resolve) =>
        execFile("ip", ["netns", "pids", `dts${TOUR_SET}-h0`], (error, stdout) => {
          if (error) return resolve([`ip netns pids failed: ${error.message}`])
          const lines = stdout.split("\n").filter((l) => l.trim() !== "").map((pid) => {
            try {
              return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ")
            } catch {
              return ""
            }
          })
          resolve(lines.filter((c) => c.includes("runner")))
        })
      )

    const run = (words: ReadonlyArray<string>) =>
      new Promise<{ code: number; output: string }>((resolve) => {
        const command = dstackCommand(words)
        execFile(command.file, [...command.args], { cwd: root, env, timeout: 120_000 }, (error, stdout, stderr) =>
          resolve({ code: error ? 1 : 0, output: stdout + stderr }))
      })

    const fetchText = async (address: string) => {
      for (let i = 0; i < 100; i++) {
        const body = await fetch(address).then((r) => r.text()).catch(() => "")
        if (body !== "") return body
        await new Promise((r) => setTimeout(r, 100))
      }
      throw new Error(`nothing answered at ${address}`)
    }

    it("every line works: a task, a port through attach, logs, stop, push and pull, the stack's page, a fleet of a netns host", async () => {
      expect(fs.readFileSync(path.join(home, ".dstack", "config.yml"), "utf8")).toContain(url)
      const outputs: Array<string> = []
      let onHosts = false
      for (const { line, words } of tourLines()) {
        if (words[1] === "dstack" && words[2] === "server") continue // started above
        if (words[0] === "sudo") {
          // scripts/netns-hosts.sh: the lines from `up` to `down` work on its hosts.
          onHosts = words[2] === "up"
          if (netnsReason !== undefined) continue
          // Before `down`: `dstack fleet delete` left no runner process on the host.
          if (words[2] === "down") expect(await runnersOnHost(), "runner processes on the tour's host").toEqual([])
          const result = await script(words.slice(2))
          outputs.push(`${line}\n${result.output}`)
          expect(result.code, `${line}\n${result.output}`).toBe(0)
          continue
        }
        if (onHosts && netnsReason !== undefined) {
          if (inCI) throw new Error(`${line}: the tour's fleet step needs network namespaces under CI=true: ${netnsReason}`)
          console.warn(`\n!!! SKIPPING the tour line ${line}: ${netnsReason}\n`)
          continue
        }
        if (words[0] === "curl") {
          const body = await fetchText(words[1])
          outputs.push(`${line}\n${body}`)
          expect(body, line).toBe("Hello from http-task, served on port 8000\n")
          continue
        }
        const args = words.slice(2).map((w, i, all) => (all[i - 1] === "-o" ? w.replace(/^\/tmp\//, `${out}/`) : w))
        if (args[0] === "attach") {
          // A second terminal: attached until the end of the test.
          const command = dstackCommand(args)
          const child = spawn(command.file, [...command.args], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] })
          background.push(child)
          let output = ""
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`${line}: not attached in 60 s:\n${output}`)), 60_000)
            child.stdout!.on("data", (d) => {
              output += String(d)
              if (output.includes("127.0.0.1:8080")) {
                clearTimeout(timer)
                resolve()
              }
            })
            child.once("exit", (code) => reject(new Error(`${line} exited with ${code}:\n${output}`)))
          })
          outputs.push(`${line}\n${output}`)
          continue
        }
        const result = await run(args)
        outputs.push(`${line}\n${result.output}`)
        if (args[0] === "offer" && result.code !== 0) expect(result.output, line).toContain("No offers")
        else expect(result.code, `${line}\n${result.output}`).toBe(0)
      }
      const all = outputs.join("\n")
      expect(all).toContain("Hello from dstack-ts")
      expect(all).toContain("listening on port 8000")
      if (netnsReason === undefined) {
        // The fleet step: its host was provisioned, the task ran in its namespace, and the delete left no runner there.
        expect(all).toMatch(/create fleet tour, placement cluster, 1 host\(s\)/)
        expect(all).toMatch(/^tour\s+0\s+(\d+\.\d+\.\d+\.\d+)\s+\d+xCPU.*remote\s+idle\s*$/m)
        const ip = /^tour\s+0\s+(\d+\.\d+\.\d+\.\d+)/m.exec(all)![1]
        expect(all).toContain(`Hello from the fleet host ${ip}`)
        expect(all).toContain("Fleet tour deleted")
        expect(fs.existsSync(`/run/netns/dts${TOUR_SET}-h0`)).toBe(false)
      }
      expect(fs.readFileSync(path.join(out, "sales.csv"), "utf8")).toBe(fs.readFileSync(path.join(root, "examples/stacks/files/sales.csv"), "utf8"))
      // The web page of the plot (public: pushed with --access public).
      const page = await fetch(`${url}/stacks/admin/examples/revenue`)
      expect(page.status).toBe(200)
      expect(page.headers.get("content-type")).toContain("text/html")
      // The run stopped by `dstack stop` ends, and attach notices.
      const ps = async () => (await run(["ps", "-a"])).output
      for (let i = 0; i < 100 && !/http-task\s+terminated/.test(await ps()); i++) await new Promise((r) => setTimeout(r, 200))
      expect(await ps()).toMatch(/http-task\s+terminated/)
    }, 300_000)
  })
})
