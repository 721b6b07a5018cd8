// Replicas under load: three server processes (test/support/fault-server.ts, the default build)
// on one PostgreSQL database and one blob store (the `s3` store on the S3 stand-in), with
// REPLICAS_SUBMISSIONS short jobs (default 300 in CI; `npm run test:faults` 1,000) submitted
// across them while one replica is killed with SIGKILL part-way and started again. Each job
// appends its run's name to one shared file (an O_APPEND write of a few bytes is atomic), so
// the count comes from the jobs themselves: every accepted run is `done`, every job ran exactly
// once, and there is no run that was not submitted. Jobs run on the local backend, at most
// REPLICAS_MAX_INSTANCES (default 4) runners per replica.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import { describeWith } from "../support/components.ts"
import { createTestDatabase, findPostgres, type TestDatabase } from "../support/postgres.ts"
import { type S3Standin, startS3Standin } from "../support/s3-standin.ts"
import { call, listRuns, removeUnder, sleep, startServer, stopServer, taskSpec, waitAllFinished, type ServerProcess } from "./serverProcess.ts"

const TOKEN = "replicas-load-token"
const SUBMISSIONS = Number(process.env.REPLICAS_SUBMISSIONS ?? 300)
const MAX_INSTANCES = Number(process.env.REPLICAS_MAX_INSTANCES ?? 4)
/** Submissions in flight at once, spread over the replicas. */
const CONCURRENCY = 12
const BUCKET = "replicas-load"
/** 32 bytes in base64: the replicas share the key that encrypts secrets. */
const SECRETS_KEY = Buffer.alloc(32, 7).toString("base64")

const pg = await findPostgres()

describeWith("postgresql", pg.available, pg.reason, () => {
  let db: TestDatabase | undefined
  let s3: S3Standin | undefined
  let dir = ""
  const replicas: Array<ServerProcess | undefined> = [undefined, undefined, undefined]

  const start = (i: number) =>
    startServer(`replica-${i}`, {
      DSTACK_SERVER_ADMIN_TOKEN: TOKEN,
      DSTACK_DATABASE_URL: db!.url,
      DSTACK_SERVER_S3_BUCKET: BUCKET,
      DSTACK_SERVER_S3_ENDPOINT: s3!.endpoint,
      DSTACK_SERVER_S3_BUCKET_REGION: s3!.region,
      AWS_ACCESS_KEY_ID: s3!.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3!.secretAccessKey,
      DSTACK_SERVER_SECRETS_KEY: SECRETS_KEY,
      DSTACK_FAULT: "",
      FAULT_SERVER_DIR: path.join(dir, `server-${i}`),
      FAULT_WORK_DIR: path.join(dir, `work-${i}`),
      FAULT_MAX_INSTANCES: String(MAX_INSTANCES)
    })

  beforeAll(async () => {
    db = await createTestDatabase(pg.url, "dstack_replicas_load")
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-replicas-load-"))
    s3 = await startS3Standin({ buckets: [BUCKET] })
    // One first: it makes the schema and the admin, which the others then find.
    replicas[0] = await start(0)
    ;[replicas[1], replicas[2]] = await Promise.all([start(1), start(2)])
  }, 300_000)

  afterAll(async () => {
    await Promise.all(replicas.map((r) => stopServer(r)))
    await removeUnder(dir)
    await db?.drop()
    await s3?.close()
  }, 120_000)

  it(`${SUBMISSIONS} submissions over 3 replicas, one killed and restarted part-way: each run done, each job once`, async () => {
    const marks = path.join(dir, "marks")
    fs.writeFileSync(marks, "")
    const names = Array.from({ length: SUBMISSIONS }, (_, i) => `load-${i}`)
    const startedAt = Date.now()
    const killAt = Math.floor(SUBMISSIONS * 0.4)
    let next = 0
    let restarting: Promise<void> | undefined
    const accepted = new Set<string>()
    const submitOne = async (name: string, i: number) => {
      // Spread over the replicas that are up; one that does not answer (killed) passes the run
      // to the next. A run whose answer was lost may be stored already: "already exists" on
      // the next replica says so (`resource_exists`).
      for (let attempt = 0; attempt < 30; attempt++) {
        const replica = replicas[(i + attempt) % 3]
        if (replica === undefined || replica.process.exitCode !== null || replica.process.signalCode !== null) continue
        const res = await call(replica.port, TOKEN, "/api/project/main/runs/apply", taskSpec(name, [`echo ${name} >> ${marks}`]))
        if (res.status === 200 || (res.status === 400 && JSON.stringify(res.body).includes("resource_exists"))) {
          accepted.add(name)
          return
        }
        if (res.status !== 0) throw new Error(`runs/apply ${name} answered ${res.status}: ${JSON.stringify(res.body).slice(0, 500)}`)
        await sleep(200)
      }
      throw new Error(`no replica took ${name}`)
    }
    const worker = async () => {
      while (next < names.length) {
        const i = next++
        if (i === killAt) {
          const victim = replicas[1]!
          victim.process.kill("SIGKILL")
          await victim.exited
          replicas[1] = undefined
          console.log(`killed replica-1 after ${i} submissions; starting it again`)
          restarting = start(1).then((r) => {
            replicas[1] = r
          })
        }
        await submitOne(names[i], i)
      }
    }
    await Promise.all(Array.from({ length: CONCURRENCY }, worker))
    await restarting
    console.log(`${accepted.size} submissions accepted in ${((Date.now() - startedAt) / 1000).toFixed(1)} s`)
    expect(accepted.size).toBe(SUBMISSIONS)

    const runs = await waitAllFinished(replicas[0]!.port, TOKEN, names, Math.max(600_000, SUBMISSIONS * 600))
    console.log(`all ${SUBMISSIONS} runs finished ${((Date.now() - startedAt) / 1000).toFixed(1)} s after the first submission`)
    const notDone = names.filter((n) => runs.get(n)?.status !== "done")
    const sample = notDone.slice(0, 5).map((n) => {
      const sub = runs.get(n)?.jobs?.[0]?.job_submissions?.at(-1)
      return `${n}: ${runs.get(n)?.status} ${sub?.termination_reason} ${sub?.termination_reason_message}`
    })
    expect(notDone, sample.join("; ")).toEqual([])

    // From the jobs' side: each name exactly once, and nothing else.
    const counts = new Map<string, number>()
    for (const line of fs.readFileSync(marks, "utf8").split("\n")) if (line !== "") counts.set(line, (counts.get(line) ?? 0) + 1)
    const twice = [...counts].filter(([, n]) => n > 1).map(([name, n]) => `${name} ×${n}`)
    const never = names.filter((n) => !counts.has(n))
    const unknown = [...counts.keys()].filter((n) => !accepted.has(n))
    console.log(`replicas: ${SUBMISSIONS} submitted, ${counts.size} ran, ${never.length} lost, ${twice.length} run twice`)
    expect(twice, "jobs that ran more than once").toEqual([])
    expect(never, "runs whose job never ran").toEqual([])
    expect(unknown).toEqual([])
    // No run stored twice either: the list holds exactly the submitted names.
    const all = await listRuns(replicas[2]!.port, TOKEN)
    expect(all.size).toBe(SUBMISSIONS)
    for (const run of all.values()) expect(run.jobs[0].job_submissions, run.run_spec.run_name).toHaveLength(1)
  }, 1_800_000)
})
