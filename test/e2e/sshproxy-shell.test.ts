// `ssh RUN` through the server's SSH proxy with OpenSSH's client, against real jobs of the local
// backend: commands and shells (with a terminal) run where the job runs — on the host for a
// process job, in the container for a Docker job (a busybox image built here) — with exit
// statuses, signals and stdin's end carried back; the job's end closes an open shell with a
// message; a wrong key and a finished job are refused. `dstack attach` writes the `ssh RUN` alias
// and prints a dev environment's IDE link; the environment stops after its inactivity_duration.
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Schema } from "effect"
import { DevEnvironmentConfiguration } from "../../core/src/domain/Configuration.ts"
import { CLI } from "../support/cli.ts"
import { dockerUnavailableReason, ensureBusyboxImage } from "../support/docker.ts"
import { type ProxyServer, proxySshArgs, proxyUserOf as userOf, runSsh as ssh, startProxyServer, task, waitJobStatus } from "../support/sshProxy.ts"

const TOKEN = "sshproxy-shell-token"
const hasSsh = spawnSync("ssh", ["-V"]).status === 0
const hasPython = spawnSync("python3", ["-c", "import pty"]).status === 0
if (!hasSsh) console.warn("sshproxy-shell.test.ts: SKIPPED, no OpenSSH client (ssh)")
const dockerMissing = await dockerUnavailableReason()
if (dockerMissing !== undefined) console.warn(`sshproxy-shell.test.ts: the Docker cases SKIPPED: ${dockerMissing}`)
let proxy: ProxyServer

const sshArgs = (key: string) => proxySshArgs(key, proxy.server.sshProxy!.port)
const waitStatus = (name: string, done: (status: string) => boolean) => waitJobStatus(proxy.api, name, done)
const waitRunning = (name: string) => waitStatus(name, (s) => s === "running")
const waitRunFinished = async (name: string) => {
  for (let i = 0; i < 600; i++) {
    const run = await proxy.api("/api/project/main/runs/get", { run_name: name })
    if (["terminated", "failed", "done"].includes(run.status)) return run
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`run ${name} never finished`)
}

beforeAll(async () => {
  if (!hasSsh) return
  proxy = await startProxyServer({ token: TOKEN, hostname: "127.0.0.1", prefix: "sshproxy-shell-", jobCheckIntervalMs: 300 })
}, 180_000)

afterAll(async () => {
  await proxy?.close()
})

describe.skipIf(!hasSsh)("ssh RUN through the SSH proxy", () => {
  it("runs commands and a terminal shell on the host of a process job, in its directory with its environment", async () => {
    await proxy.client.runs.submit(task(["pwd > job-dir.txt", "sleep 600"], { env: { GREETING: "hello-from-the-job" } }), { runName: "shell-process" })
    const run = await waitRunning("shell-process")
    const user = userOf(run)
    const at = [...sshArgs(proxy.ownerKey), `${user}@127.0.0.1`]

    const env = await ssh([...at, "echo $GREETING; echo $DSTACK_RUN_NAME; pwd; cat job-dir.txt"])
    expect(env.stderr).toBe("")
    expect(env.code).toBe(0)
    const [greeting, runName, cwd, jobDir] = env.stdout.trim().split("\n")
    expect(greeting).toBe("hello-from-the-job")
    expect(runName).toBe("shell-process")
    expect(cwd).toBe(jobDir)

    // The exit status and stderr come back; stdin's end reaches the command.
    const status = await ssh([...at, "echo to-stderr >&2; exit 7"])
    expect(status).toMatchObject({ code: 7, stdout: "", stderr: "to-stderr\n" })
    const counted = await ssh([...at, "wc -c"], "twelve bytes")
    expect(counted.stdout.trim()).toBe("12")
    expect(counted.code).toBe(0)
    // A command ended by a signal: OpenSSH reports the exit signal with status 255.
    const killed = await ssh([...at, "kill -TERM $$"])
    expect(killed.code).toBe(255)

    if (hasPython) {
      // A shell on a terminal (-tt): the commands typed go to an interactive shell.
      const shell = await ssh(["-tt", ...at], "tty >/dev/null && echo on-a-tty; echo $TERM-term; exit 5\n")
      expect(shell.stdout).toContain("on-a-tty")
      expect(shell.code).toBe(5)
      const tty = await ssh(["-tt", ...at, "stty size; test -t 0 && echo tty-command"])
      expect(tty.stdout).toMatch(/^\d+ \d+\r?\n/)
      expect(tty.stdout).toContain("tty-command")
    }

    const stranger = await ssh([...sshArgs(proxy.strangerKey), `${user}@127.0.0.1`, "true"])
    expect(stranger.code).toBe(255)
    expect(stranger.stderr).toContain("Permission denied (publickey)")
    await proxy.client.runs.stop(["shell-process"], { abort: true })
  }, 120_000)

  it("closes an open shell with a message when its job ends, and refuses the finished job", async () => {
    await proxy.client.runs.submit(task(["sleep 600"]), { runName: "shell-ends" })
    const run = await waitRunning("shell-ends")
    const user = userOf(run)
    const child = spawn("ssh", [...sshArgs(proxy.ownerKey), `${user}@127.0.0.1`, "echo started; sleep 600"])
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
    for (let i = 0; i < 200 && !stdout.includes("started"); i++) await new Promise((r) => setTimeout(r, 50))
    expect(stdout).toContain("started")
    await proxy.client.runs.stop(["shell-ends"], { abort: true })
    const code = await exited
    expect(stderr).toContain("the job of run shell-ends has ended")
    expect(code).not.toBe(0)
    await waitStatus("shell-ends", (s) => s !== "running" && s !== "terminating")
    const after = await ssh([...sshArgs(proxy.ownerKey), `${user}@127.0.0.1`, "true"])
    expect(after.code).toBe(255)
    expect(after.stderr).toContain("Permission denied (publickey)")
  }, 120_000)

  it.skipIf(dockerMissing !== undefined)("runs commands and a shell inside the container of a Docker job", async () => {
    const image = await ensureBusyboxImage()
    await proxy.client.runs.submit(task(["sleep 600"], { image, env: { IN_CONTAINER: "yes" } }), { runName: "shell-docker" })
    const run = await waitRunning("shell-docker")
    const at = [...sshArgs(proxy.ownerKey), `${userOf(run)}@127.0.0.1`]
    const inside = await ssh([...at, "echo $IN_CONTAINER; hostname; cat /proc/1/cmdline | tr '\\0' ' '"])
    expect(inside.code).toBe(0)
    const [flag, hostname, pid1] = inside.stdout.trim().split("\n")
    expect(flag).toBe("yes")
    expect(hostname).not.toBe(os.hostname())
    expect(pid1).toContain("sleep 600")
    const status = await ssh([...at, "exit 4"])
    expect(status.code).toBe(4)
    const counted = await ssh([...at, "wc -c"], "twelve bytes")
    expect(counted.stdout.trim()).toBe("12")
    const shell = await ssh(["-tt", ...at], "test -t 0 && echo container-tty; exit 6\n")
    expect(shell.stdout).toContain("container-tty")
    expect(shell.code).toBe(6)
    await proxy.client.runs.stop(["shell-docker"], { abort: true })
  }, 180_000)

  it("dstack attach writes the ssh alias and prints the IDE link; the dev environment runs init and stops after inactivity_duration", async () => {
    const home = fs.mkdtempSync(path.join(proxy.dir, "home-"))
    const configuration = Schema.decodeUnknownSync(DevEnvironmentConfiguration)({
      type: "dev-environment", ide: "vscode", init: ["echo init-ran > init.txt"], inactivity_duration: "6s", resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." }
    })
    await proxy.client.runs.submit(configuration, { runName: "dev-ide" })
    const running = await waitRunning("dev-ide")
    // An SSH connection held from the start keeps the environment up while the CLI starts.
    const holder = spawn("ssh", [...sshArgs(proxy.ownerKey), `${userOf(running)}@127.0.0.1`, "sleep 600"])
    const holderExited = new Promise<void>((resolve) => holder.on("exit", () => resolve()))
    const attach = spawn(process.execPath, [CLI, "attach", "dev-ide"], {
      env: { ...process.env, HOME: home, NO_COLOR: "1", DSTACK_SERVER_URL: proxy.serving.url, DSTACK_TOKEN: TOKEN, DSTACK_PROJECT: "main" }
    })
    let out = ""
    attach.stdout.on("data", (d) => (out += d))
    attach.stderr.on("data", (d) => (out += d))
    const attachExited = new Promise<void>((resolve) => attach.on("exit", () => resolve()))
    try {
      for (let i = 0; i < 600 && !/ssh-remote\+dev-ide\S*\n/.test(out); i++) await new Promise((r) => setTimeout(r, 50))
      expect(out).toContain("ssh dev-ide")
      const link = /(vscode:\/\/vscode-remote\/ssh-remote\+dev-ide(\S*))\n/.exec(out)
      expect(link, out).not.toBeNull()
      const config = path.join(home, ".dstack", "ssh", "config")
      expect(fs.readFileSync(path.join(home, ".ssh", "config"), "utf8")).toMatch(/^Include ~\/\.dstack\/ssh\/config\n/)
      expect(fs.readFileSync(config, "utf8")).toMatch(/^Host dev-ide\n[\s\S]*User [0-9a-f]{32}_root\n/m)
      // The alias accepts only the proxy's own host key, kept beside it.
      const knownHosts = path.join(home, ".dstack", "ssh", "known_hosts")
      expect(fs.readFileSync(config, "utf8")).toContain(`    UserKnownHostsFile ${knownHosts}\n    StrictHostKeyChecking yes\n`)
      expect(fs.readFileSync(knownHosts, "utf8")).toBe(`[127.0.0.1]:${proxy.server.sshProxy!.port} ${proxy.server.sshProxy!.hostPublicKey}\n`)
      // The alias reaches the job: init ran first, in the directory the link opens.
      const viaAlias = await ssh(["-F", config, "dev-ide", "cat init.txt; pwd"])
      expect(viaAlias.stderr).toBe("")
      expect(viaAlias.stdout.split("\n").slice(0, 2)).toEqual(["init-ran", link![2]])
      // A connection held longer than inactivity_duration kept the environment up.
      const held = await ssh(["-F", config, "dev-ide", "sleep 7; echo held"])
      expect(held.stdout).toBe("held\n")
      const during = await proxy.api("/api/project/main/runs/get", { run_name: "dev-ide" })
      expect(during.jobs[0].job_submissions.at(-1).status).toBe("running")
    } catch (error) {
      attach.kill("SIGINT")
      throw error
    } finally {
      holder.kill("SIGTERM")
      await holderExited
    }
    // With no connection left the environment stops; attach says why, detaches and exits.
    const stuck = setTimeout(() => attach.kill("SIGINT"), 90_000)
    await attachExited
    clearTimeout(stuck)
    expect(out).toContain("Run dev-ide ended (failed, job_failed; job: inactivity_duration_exceeded): its ports are no longer forwarded")
    // Detaching removes the alias.
    expect(fs.readFileSync(path.join(home, ".dstack", "ssh", "config"), "utf8")).not.toContain("Host dev-ide")
    await waitStatus("dev-ide", (s) => s === "terminated" || s === "failed" || s === "done" || s === "aborted")
    // As upstream: the job is terminated for inactivity_duration_exceeded, which (not a normal
    // exit, not retried) fails the run with job_failed.
    const ended = await waitRunFinished("dev-ide")
    const sub = ended.jobs[0].job_submissions.at(-1)
    expect(sub.status).toBe("terminated")
    expect(sub.termination_reason).toBe("inactivity_duration_exceeded")
    expect(ended.status).toBe("failed")
    expect(ended.termination_reason).toBe("job_failed")
  }, 180_000)
})
