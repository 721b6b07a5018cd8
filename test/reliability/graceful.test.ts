// A graceful stop (SIGTERM) of the server — a restart or an upgrade — leaves running jobs
// running, as SIGKILL does: the job's process outlives the server, and the server started again
// on the same state follows it to its end with every log line stored once. A runner with no
// running job (an idle instance) is stopped, and so is the runner the restarted server followed
// once its job ended, when that server stops in turn. A real server process
// (test/support/fault-server.ts, the default build) with the local backend.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { call, finished, logsOf, processesUnder, removeUnder, sleep, startServer, stopServer, taskSpec, type ServerProcess } from "./serverProcess.ts"

const TOKEN = "graceful-token"

/** Runner processes (not their jobs) started under `dir`. */
const runnersUnder = (dir: string) =>
  processesUnder(dir).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("--work-dir")
    } catch {
      return false
    }
  })
const LINES = 60

describe("SIGTERM of the server", () => {
  let dir = ""
  let server: ServerProcess | undefined
  const env = () => ({
    DSTACK_SERVER_ADMIN_TOKEN: TOKEN,
    FAULT_SERVER_DIR: path.join(dir, "server"),
    FAULT_WORK_DIR: path.join(dir, "work"),
    FAULT_LEASE_MS: "3000"
  })

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-graceful-"))
    server = await startServer("first", env())
  }, 180_000)
  afterAll(async () => {
    await stopServer(server)
    await removeUnder(dir)
  })

  it("leaves the running job running and stops the idle runner; the restarted server follows the job to done with each line once", async () => {
    const marker = path.join(dir, "job-pid")
    const script = `echo $$ > ${marker}; i=1; while [ $i -le ${LINES} ]; do echo "line $i"; i=$((i+1)); sleep 0.5; done`
    const applied = await call(server!.port, TOKEN, "/api/project/main/runs/apply", taskSpec("graceful", [script]))
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    // Running, with a few lines stored.
    for (const start = Date.now(); ; await sleep(200)) {
      if (Date.now() - start > 120_000) throw new Error("the job never logged its third line")
      if ((await logsOf(server!.port, TOKEN, "graceful")).includes("line 3\n")) break
    }
    const jobPid = Number(fs.readFileSync(marker, "utf8").trim())
    // A second run, done at once, whose instance stays idle (its runner waiting for work).
    await call(server!.port, TOKEN, "/api/project/main/runs/apply", taskSpec("idle-after", ["true"], { idle_duration: "1h" }))
    for (const start = Date.now(); ; await sleep(200)) {
      if (Date.now() - start > 120_000) throw new Error("idle-after did not finish")
      if (finished((await call(server!.port, TOKEN, "/api/project/main/runs/get", { run_name: "idle-after" })).body)) break
    }
    expect(runnersUnder(path.join(dir, "work")).length).toBe(2)

    const stoppedAt = Date.now()
    server!.process.kill("SIGTERM")
    const exit = await server!.exited
    console.log(`graceful: the server exited ${Date.now() - stoppedAt} ms after SIGTERM`)
    expect(exit.code, server!.output.join("").slice(-2000)).toBe(0)
    // The job is still there, and so is its runner; the idle runner is gone.
    expect(() => process.kill(jobPid, 0)).not.toThrow()
    expect(runnersUnder(path.join(dir, "work")).length).toBe(1)

    server = await startServer("second", env())
    let run: any
    for (const start = Date.now(); ; await sleep(300)) {
      if (Date.now() - start > 120_000) throw new Error(`the run did not finish after the restart: ${JSON.stringify(run).slice(0, 800)}`)
      run = (await call(server.port, TOKEN, "/api/project/main/runs/get", { run_name: "graceful" })).body
      if (finished(run)) break
    }
    expect([run.status, run.jobs[0].job_submissions.length], JSON.stringify(run.jobs[0].job_submissions)).toEqual(["done", 1])
    const lines = (await logsOf(server.port, TOKEN, "graceful")).trimEnd().split("\n")
    expect(lines).toEqual(Array.from({ length: LINES }, (_, i) => `line ${i + 1}`))

    // The runner the first server left is the second one's now that it followed the job on it:
    // idle after the job (its instance kept for reuse), it is stopped when the second server
    // closes too, as the first one stopped its own idle runner.
    expect(runnersUnder(path.join(dir, "work")).length).toBe(1)
    server.process.kill("SIGTERM")
    expect((await server.exited).code, server.output.join("").slice(-2000)).toBe(0)
    expect(runnersUnder(path.join(dir, "work"))).toEqual([])
  }, 300_000)
})
