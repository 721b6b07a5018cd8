// A runner that answers slowly, with garbage, truncated or reset connections, or not at all: a
// real server process (test/support/fault-server.ts, the local backend) reaches each real
// runner through a fault proxy (test/support/fault-proxy.ts) whose mode this test sets. A fault
// shorter than DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS leaves the job running, and once the
// answers come back the run ends `done` with every log line stored once; a fault that lasts
// fails the job as `instance_unreachable` with a message saying what the runner did, and the
// server goes on serving and running jobs.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { writeModeFile, type FaultMode } from "../support/fault-proxy.ts"
import { call, finished, logsOf, removeUnder, sleep, startServer, stopServer, taskSpec, type ServerProcess } from "./serverProcess.ts"

const TOKEN = "runner-faults-token"
const UNREACHABLE_SECONDS = 8
const LINES = 24

describe("a runner that answers slowly or with garbage", () => {
  let dir = ""
  let modeFile = ""
  let server: ServerProcess | undefined

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-runner-faults-"))
    modeFile = path.join(dir, "proxy-mode.json")
    writeModeFile(modeFile, { kind: "pass" })
    server = await startServer("server", {
      DSTACK_SERVER_ADMIN_TOKEN: TOKEN,
      DSTACK_DATABASE_URL: "",
      DSTACK_FAULT: "",
      DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS: String(UNREACHABLE_SECONDS),
      FAULT_RUNNER_PROXY_FILE: modeFile,
      FAULT_SERVER_DIR: path.join(dir, "server"),
      FAULT_WORK_DIR: path.join(dir, "work")
    })
  }, 180_000)

  afterAll(async () => {
    await stopServer(server)
    await removeUnder(dir)
  }, 60_000)

  const getRun = async (name: string) => (await call(server!.port, TOKEN, "/api/project/main/runs/get", { run_name: name })).body

  const waitFor = async (name: string, ok: (run: any) => boolean, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs
    let run: any
    while (Date.now() < deadline) {
      run = await getRun(name)
      if (ok(run)) return run
      await sleep(250)
    }
    throw new Error(`run ${name} did not get there in ${timeoutMs} ms: ${run?.status} ${JSON.stringify(run?.jobs?.[0]?.job_submissions?.at(-1) ?? null).slice(0, 600)}`)
  }

  /** A job printing LINES numbered lines, a few a second, so that a fault lands in its middle. */
  const submitCounter = async (name: string) => {
    const res = await call(server!.port, TOKEN, "/api/project/main/runs/apply", taskSpec(name, [`for i in $(seq 1 ${LINES}); do echo "line $i"; sleep 0.4; done`]))
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    // Running, with some output stored: the fault then cuts into a job being followed.
    await waitFor(name, (run) => run?.status === "running", 120_000)
    const deadline = Date.now() + 60_000
    while (!(await logsOf(server!.port, TOKEN, name)).includes("line 3\n") && Date.now() < deadline) await sleep(200)
  }

  const expectAllLines = async (name: string) => {
    const text = await logsOf(server!.port, TOKEN, name)
    const expected = Array.from({ length: LINES }, (_, i) => `line ${i + 1}\n`).join("")
    expect(text).toBe(expected)
  }

  const transient: ReadonlyArray<[string, FaultMode, number]> = [
    ["answers nothing (a stalled connection)", { kind: "stall" }, 4_000],
    ["answers with garbage", { kind: "garbage" }, 3_000],
    ["resets every connection", { kind: "reset" }, 3_000],
    ["cuts every answer short", { kind: "truncate", bytes: 200 }, 3_000],
    ["answers slowly", { kind: "delay", ms: 700 }, 4_000]
  ]

  for (const [what, mode, ms] of transient) {
    it(`a runner that ${what} for ${ms / 1000} s: the run carries on to done, every line stored once`, async () => {
      const name = `transient-${mode.kind}`
      await submitCounter(name)
      writeModeFile(modeFile, mode)
      await sleep(ms)
      const during = await getRun(name)
      writeModeFile(modeFile, { kind: "pass" })
      expect(during.status, "the job is not failed for a fault shorter than the unreachable limit").toBe("running")
      const run = await waitFor(name, finished, 120_000)
      expect(run.status, JSON.stringify(run.jobs[0].job_submissions.at(-1)).slice(0, 600)).toBe("done")
      await expectAllLines(name)
    }, 240_000)
  }

  const lasting: ReadonlyArray<[string, FaultMode, RegExp]> = [
    // The job's stream stops heartbeating; each attempt to follow it again waits on a health
    // check that does not answer either (the stream is asked for again first): whichever was last.
    ["never answers", { kind: "stall" }, /^the runner did not answer for \d+s: .*(did not answer its health check within \d+s|sent nothing on the job's event stream, not even its heartbeat, for \d+s)/],
    ["answers only garbage", { kind: "garbage" }, /^the runner did not answer for \d+s: cannot reach the runner at \S+: fetch failed \(.*(HTTP|protocol|parse).*\)/i]
  ]

  for (const [what, mode, message] of lasting) {
    it(`a runner that ${what}: the job fails as instance_unreachable with a message, and the server runs the next job`, async () => {
      const name = `lasting-${mode.kind}`
      const res = await call(server!.port, TOKEN, "/api/project/main/runs/apply", taskSpec(name, ["echo started", "sleep 300"]))
      expect(res.status, JSON.stringify(res.body)).toBe(200)
      await waitFor(name, (run) => run?.status === "running", 120_000)
      writeModeFile(modeFile, mode)
      const faultAt = Date.now()
      let run: any
      try {
        run = await waitFor(name, finished, 90_000)
      } finally {
        writeModeFile(modeFile, { kind: "pass" })
      }
      const sub = run.jobs[0].job_submissions.at(-1)
      console.log(`${mode.kind}: run ${run.status} ${Date.now() - faultAt} ms after the fault began: ${sub.termination_reason}: ${sub.termination_reason_message}`)
      expect(run.status).toBe("failed")
      expect(sub.termination_reason).toBe("instance_unreachable")
      expect(sub.termination_reason_message).toMatch(message)
      // The server still serves, and runs the next job.
      const next = `after-${mode.kind}`
      expect((await call(server!.port, TOKEN, "/api/project/main/runs/apply", taskSpec(next, ["echo fine"]))).status).toBe(200)
      const done = await waitFor(next, finished, 120_000)
      expect(done.status).toBe("done")
      expect(await logsOf(server!.port, TOKEN, next)).toBe("fine\n")
    }, 300_000)
  }
})
