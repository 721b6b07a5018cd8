// The database unreachable for 10 s, then silent for 15 s: a real server process
// (test/support/fault-server.ts) on its own PostgreSQL database, reached through a fault proxy
// (test/support/fault-proxy.ts) that the test cuts — every open connection closed, new ones
// refused — or turns into a blackhole — connections accepted, nothing ever answered — and then
// lets through again. During the fault API requests are answered 503 naming the database (not a
// 500, not a hang) and the engine does not fail the running job; afterwards the same process
// serves again, and the job accepted before the fault ends `done` with every log line stored once.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import { describeWith } from "../support/components.ts"
import { startFaultProxy, type FaultMode, type FaultProxy } from "../support/fault-proxy.ts"
import { createTestDatabase, findPostgres, type TestDatabase } from "../support/postgres.ts"
import { call, finished, logsOf, removeUnder, sleep, startServer, stopServer, taskSpec, type ServerProcess } from "./serverProcess.ts"

const pg = await findPostgres()
const TOKEN = "database-faults-token"
const OUTAGE_MS = 10_000
const HANG_MS = 15_000
/** The store's bounds for this server (`state: postgres` options), in seconds. */
const STATE_OPTIONS = { query_timeout: 3, connect_timeout: 3 }
const LINES = 60

describeWith("postgresql", pg.available, pg.reason, () => {
  let dir = ""
  let db: TestDatabase | undefined
  let proxy: FaultProxy | undefined
  let server: ServerProcess | undefined

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-db-faults-"))
    db = await createTestDatabase(pg.url, "dstack_dbfault")
    const target = new URL(db.url)
    proxy = await startFaultProxy({ targetHost: target.hostname, targetPort: Number(target.port || 5432) })
    const viaProxy = new URL(db.url)
    viaProxy.hostname = "127.0.0.1"
    viaProxy.port = String(proxy.port)
    server = await startServer("server", {
      DSTACK_SERVER_ADMIN_TOKEN: TOKEN,
      DSTACK_DATABASE_URL: viaProxy.toString(),
      DSTACK_FAULT: "",
      FAULT_STATE_OPTIONS: JSON.stringify(STATE_OPTIONS),
      DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS: "60",
      FAULT_SERVER_DIR: path.join(dir, "server"),
      FAULT_WORK_DIR: path.join(dir, "work")
    })
  }, 180_000)

  afterAll(async () => {
    await stopServer(server)
    await proxy?.close()
    await removeUnder(dir)
    await db?.drop()
  }, 60_000)

  /**
   * Runs a job through a database fault (`mode` for at least `faultMs`): during it, the API
   * answers 503 naming the database (or 200 from memory) within `callBoundMs`, never hangs; after
   * it, the same process serves again, the job ends `done` with every log line stored once, and
   * submissions pass.
   */
  const throughFault = async (name: string, mode: FaultMode, faultMs: number) => {
    const port = server!.port
    const res = await call(port, TOKEN, "/api/project/main/runs/apply", taskSpec(name, [`for i in $(seq 1 ${LINES}); do echo "line $i"; sleep 0.5; done`]))
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    const deadline = Date.now() + 120_000
    while (Date.now() < deadline) {
      const run = (await call(port, TOKEN, "/api/project/main/runs/get", { run_name: name })).body
      if (run?.status === "running" && (await logsOf(port, TOKEN, name)).includes("line 3\n")) break
      await sleep(250)
    }

    proxy!.setMode(mode)
    const faultAt = Date.now()
    const answers: Array<{ route: string; status: number; msg: string; ms: number }> = []
    try {
      for (const [route, body] of [
        ["/api/project/main/runs/get", { run_name: name }],
        ["/api/runs/list", { project_name: "main" }],
        ["/api/project/main/runs/apply", taskSpec(`${name}-during`, ["echo never"])],
        ["/api/project/main/logs/poll", { run_name: name, limit: 10 }]
      ] as const) {
        const started = Date.now()
        // `call` gives up after 30 s with status 0: a request left hanging fails below.
        const answer = await call(port, TOKEN, route, body)
        answers.push({ route, status: answer.status, msg: JSON.stringify(answer.body).slice(0, 400), ms: Date.now() - started })
      }
      while (Date.now() - faultAt < faultMs) await sleep(200)
    } finally {
      proxy!.setMode({ kind: "pass" })
    }
    console.log(`${mode.kind} for ${Date.now() - faultAt} ms:\n${answers.map((a) => `${a.route}: ${a.status} in ${a.ms} ms: ${a.msg}`).join("\n")}`)
    // What the server holds in memory (a run it follows) may still be answered; anything that
    // needs the database is a 503 that names it.
    for (const a of answers) {
      expect([200, 503], `${a.route}: ${a.msg}`).toContain(a.status)
      if (a.status === 503) expect(a.msg, a.route).toMatch(/database/i)
      expect(a.msg, a.route).not.toMatch(/\bat .*\.ts:\d+/)
    }
    for (const route of ["/api/runs/list", "/api/project/main/runs/apply", "/api/project/main/logs/poll"]) {
      expect(answers.find((a) => a.route === route)?.status, route).toBe(503)
    }

    // The same process serves again once the database is back.
    let back = await call(port, TOKEN, "/api/project/main/runs/get", { run_name: name })
    const backDeadline = Date.now() + 60_000
    while (back.status !== 200 && Date.now() < backDeadline) {
      await sleep(500)
      back = await call(port, TOKEN, "/api/project/main/runs/get", { run_name: name })
    }
    expect(back.status, JSON.stringify(back.body).slice(0, 400)).toBe(200)
    expect(back.body.status, "the job was not failed for the fault").not.toMatch(/failed|terminated/)
    expect(server!.process.exitCode).toBe(null)

    let run: any = back.body
    const endDeadline = Date.now() + 120_000
    while (!finished(run) && Date.now() < endDeadline) {
      await sleep(500)
      run = (await call(port, TOKEN, "/api/project/main/runs/get", { run_name: name })).body
    }
    expect(run.status, JSON.stringify(run.jobs?.[0]?.job_submissions?.at(-1) ?? null).slice(0, 600)).toBe("done")
    const expected = Array.from({ length: LINES }, (_, i) => `line ${i + 1}\n`).join("")
    expect(await logsOf(port, TOKEN, name)).toBe(expected)
    // Submissions are accepted again.
    const after = await call(port, TOKEN, "/api/project/main/runs/apply", taskSpec(`${name}-after`, ["echo back"]))
    expect(after.status, JSON.stringify(after.body).slice(0, 400)).toBe(200)
  }

  it("the database unreachable for 10 s: answers 503 naming the database while it is down, keeps the running job, and serves again after, losing no run or log line", async () => {
    await throughFault("through-outage", { kind: "cut" }, OUTAGE_MS)
  }, 400_000)

  it("the database accepting connections and never answering for 15 s: answers 503 naming the database within query_timeout, keeps the running job, and serves again after on fresh connections", async () => {
    // A blackhole: connections accepted, every byte dropped; the connections it swallowed stay
    // silent after it ends, so the server must give them up (query_timeout) to serve again.
    await throughFault("through-hang", { kind: "blackhole" }, HANG_MS)
  }, 400_000)
})
