// The database unreachable for 10 s: a real server process (test/support/fault-server.ts) on its
// own PostgreSQL database, reached through a fault proxy (test/support/fault-proxy.ts) that the
// test cuts — every open connection closed, new ones refused — and then lets through again.
// During the outage API requests are answered 503 naming the database (not a 500, not a hang)
// and the engine does not fail the running job; afterwards the same process serves again, and
// the job accepted before the outage ends `done` with every log line stored once.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import { describeWith } from "../support/components.ts"
import { startFaultProxy, type FaultProxy } from "../support/fault-proxy.ts"
import { createTestDatabase, findPostgres, type TestDatabase } from "../support/postgres.ts"
import { call, finished, logsOf, removeUnder, sleep, startServer, stopServer, taskSpec, type ServerProcess } from "./serverProcess.ts"

const pg = await findPostgres()
const TOKEN = "database-faults-token"
const OUTAGE_MS = 10_000
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

  it("the database unreachable for 10 s: answers 503 naming the database while it is down, keeps the running job, and serves again after, losing no run or log line", async () => {
    const port = server!.port
    const res = await call(port, TOKEN, "/api/project/main/runs/apply", taskSpec("through-outage", [`for i in $(seq 1 ${LINES}); do echo "line $i"; sleep 0.5; done`]))
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    const deadline = Date.now() + 120_000
    while (Date.now() < deadline) {
      const run = (await call(port, TOKEN, "/api/project/main/runs/get", { run_name: "through-outage" })).body
      if (run?.status === "running" && (await logsOf(port, TOKEN, "through-outage")).includes("line 3\n")) break
      await sleep(250)
    }

    proxy!.setMode({ kind: "cut" })
    const cutAt = Date.now()
    const answers: Array<{ route: string; status: number; msg: string; ms: number }> = []
    try {
      for (const [route, body] of [
        ["/api/project/main/runs/get", { run_name: "through-outage" }],
        ["/api/runs/list", { project_name: "main" }],
        ["/api/project/main/runs/apply", taskSpec("during-outage", ["echo never"])],
        ["/api/project/main/logs/poll", { run_name: "through-outage", limit: 10 }]
      ] as const) {
        const started = Date.now()
        const answer = await call(port, TOKEN, route, body)
        answers.push({ route, status: answer.status, msg: JSON.stringify(answer.body).slice(0, 400), ms: Date.now() - started })
      }
      while (Date.now() - cutAt < OUTAGE_MS) await sleep(200)
    } finally {
      proxy!.setMode({ kind: "pass" })
    }
    console.log(answers.map((a) => `${a.route}: ${a.status} in ${a.ms} ms: ${a.msg}`).join("\n"))
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
    let back = await call(port, TOKEN, "/api/project/main/runs/get", { run_name: "through-outage" })
    const backDeadline = Date.now() + 60_000
    while (back.status !== 200 && Date.now() < backDeadline) {
      await sleep(500)
      back = await call(port, TOKEN, "/api/project/main/runs/get", { run_name: "through-outage" })
    }
    expect(back.status, JSON.stringify(back.body).slice(0, 400)).toBe(200)
    expect(back.body.status, "the job was not failed for the outage").not.toMatch(/failed|terminated/)
    expect(server!.process.exitCode).toBe(null)

    let run: any = back.body
    const endDeadline = Date.now() + 120_000
    while (!finished(run) && Date.now() < endDeadline) {
      await sleep(500)
      run = (await call(port, TOKEN, "/api/project/main/runs/get", { run_name: "through-outage" })).body
    }
    expect(run.status, JSON.stringify(run.jobs?.[0]?.job_submissions?.at(-1) ?? null).slice(0, 600)).toBe("done")
    const expected = Array.from({ length: LINES }, (_, i) => `line ${i + 1}\n`).join("")
    expect(await logsOf(port, TOKEN, "through-outage")).toBe(expected)
    // Submissions are accepted again.
    const after = await call(port, TOKEN, "/api/project/main/runs/apply", taskSpec("after-outage", ["echo back"]))
    expect(after.status, JSON.stringify(after.body).slice(0, 400)).toBe(200)
  }, 400_000)
})
