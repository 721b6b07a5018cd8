// `kill -9` of a runner: the job's processes (its whole process group, children included) die
// with it, the server notices within DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS (5 here) and fails
// the run as `instance_unreachable` with a message, and `dstack ps -a` shows both. A real server
// process (test/support/fault-server.ts, the default build) with the local backend, whose
// runners run jobs with the process executor.
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { call, finished, removeUnder, sleep, startServer, stopServer, taskSpec, type ServerProcess } from "./serverProcess.ts"
import { CLI } from "../support/cli.ts"

const TOKEN = "runner-kill-token"
const UNREACHABLE_SECONDS = 5

/** Processes whose process group is `pgid` (field 5 of /proc/PID/stat). */
const groupMembers = (pgid: number): Array<number> => {
  const out: Array<number> = []
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8")
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      // fields[0] is the state; zombies are gone for our purpose.
      if (Number(fields[2]) === pgid && fields[0] !== "Z") out.push(Number(entry))
    } catch {
      // gone already
    }
  }
  return out
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const dstack = (args: ReadonlyArray<string>, port: number) =>
  new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, DSTACK_SERVER_URL: `http://127.0.0.1:${port}`, DSTACK_TOKEN: TOKEN, DSTACK_PROJECT: "main", NO_COLOR: "1" }
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr += d))
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })

describe("kill -9 of a runner", () => {
  let dir = ""
  let server: ServerProcess | undefined

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-runner-kill-"))
    server = await startServer("server", {
      DSTACK_SERVER_ADMIN_TOKEN: TOKEN,
      DSTACK_DATABASE_URL: "",
      DSTACK_FAULT: "",
      DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS: String(UNREACHABLE_SECONDS),
      FAULT_SERVER_DIR: path.join(dir, "server"),
      FAULT_WORK_DIR: path.join(dir, "work")
    })
  }, 180_000)

  afterAll(async () => {
    await stopServer(server)
    await removeUnder(dir)
  }, 60_000)

  it("takes the job's processes with it; the run fails as instance_unreachable within seconds, with a message in dstack ps", async () => {
    const pidFile = path.join(dir, "job.pid")
    // The shell (the group's leader) records its pid; `sleep` is a child in the same group.
    const res = await call(server!.port, TOKEN, "/api/project/main/runs/apply", taskSpec("victim", [`echo $$ > ${pidFile}`, "echo started", "sleep 300 & wait"]))
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    let run: any
    const deadline = Date.now() + 90_000
    while (Date.now() < deadline && !(fs.existsSync(pidFile) && fs.readFileSync(pidFile, "utf8").trim() !== "")) await sleep(200)
    const pgid = Number(fs.readFileSync(pidFile, "utf8").trim())
    while (Date.now() < deadline) {
      run = (await call(server!.port, TOKEN, "/api/project/main/runs/get", { run_name: "victim" })).body
      if (run.status === "running" && groupMembers(pgid).length >= 2) break
      await sleep(200)
    }
    expect(run.status).toBe("running")
    expect(groupMembers(pgid).length, "the shell and its sleep").toBeGreaterThanOrEqual(2)
    const pd = run.jobs[0].job_submissions[0].job_provisioning_data
    const runnerPid = (JSON.parse(pd.backend_data) as { pid: number }).pid
    expect(alive(runnerPid)).toBe(true)

    process.kill(runnerPid, "SIGKILL")
    const killedAt = Date.now()
    // The job's group goes with its runner (the watchdog sees the runner's pipe close).
    while (groupMembers(pgid).length > 0 && Date.now() - killedAt < 10_000) await sleep(100)
    expect(groupMembers(pgid), "job processes left after the runner died").toEqual([])
    console.log(`job processes gone ${Date.now() - killedAt} ms after kill -9 of the runner`)

    while (!finished(run) && Date.now() - killedAt < 100_000) {
      await sleep(250)
      run = (await call(server!.port, TOKEN, "/api/project/main/runs/get", { run_name: "victim" })).body
    }
    const sub = run.jobs[0].job_submissions.at(-1)
    console.log(`run ${run.status} ${Date.now() - killedAt} ms after the kill: ${sub.termination_reason}: ${sub.termination_reason_message}`)
    expect(run.status).toBe("failed")
    expect(sub.termination_reason).toBe("instance_unreachable")
    expect(sub.termination_reason_message).toMatch(/^the runner did not answer for \d+s: /)
    // By the configured time, not the default of 120 s (slack for a loaded machine).
    expect(Date.now() - killedAt).toBeLessThan(100_000)

    const ps = await dstack(["ps", "-a"], server!.port)
    expect(ps.stderr).toBe("")
    expect(ps.stdout).toMatch(/^NAME\s+STATUS\s+SUBMITTED\s+ERROR\n/)
    expect(ps.stdout).toMatch(/victim\s+failed\s+.*instance unreachable: the runner did not answer for \d+s/)
  }, 240_000)
})
