// Disk full, on the server and on a runner: a real server process (test/support/fault-server.ts,
// the embedded store, the local backend) with its data directory — or its runners' work
// directory — on a small tmpfs of its own (test/support/small-disk.ts) that the test fills to
// the last byte and frees again. On the server: uploads and submissions fail with an error that
// names the disk (503, not a 500 with a stack), the server stays up, a running job is not failed
// and its log lines, held by its runner meanwhile, are all stored once space is freed; then it
// accepts work again. On a runner: the job fails with a reason and message that say its disk is
// full.
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import { describeWith } from "../support/components.ts"
import { canMount, mountSmallDisk, type SmallDisk } from "../support/small-disk.ts"
import { call, finished, logsOf, reapUnder, removeUnder, sleep, startServer, stopServer, taskSpec, type ServerProcess } from "./serverProcess.ts"

const TOKEN = "disk-faults-token"
const LINES = 40
const mount = canMount()

const getRun = async (port: number, name: string) => (await call(port, TOKEN, "/api/project/main/runs/get", { run_name: name })).body

const waitFor = async (port: number, name: string, ok: (run: any) => boolean, timeoutMs: number) => {
  const deadline = Date.now() + timeoutMs
  let run: any
  while (Date.now() < deadline) {
    run = await getRun(port, name)
    if (ok(run)) return run
    await sleep(250)
  }
  throw new Error(`run ${name} did not get there in ${timeoutMs} ms: ${run?.status} ${JSON.stringify(run?.jobs?.[0]?.job_submissions?.at(-1) ?? null).slice(0, 600)}`)
}

const uploadCode = async (port: number, bytes: Buffer) => {
  const hash = createHash("sha256").update(bytes).digest("hex")
  try {
    const res = await fetch(`http://127.0.0.1:${port}/api/project/main/repos/upload_code?repo_id=disk-repo&hash=${hash}`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/octet-stream" },
      body: new Uint8Array(bytes),
      signal: AbortSignal.timeout(30_000)
    })
    return { status: res.status, text: await res.text() }
  } catch (e) {
    return { status: 0, text: String(e) }
  }
}

describeWith("tmpfs mounts (root)", mount.available, mount.reason, () => {
  let dir = ""
  let disk: SmallDisk | undefined
  let server: ServerProcess | undefined

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-disk-faults-"))
    disk = mountSmallDisk(path.join(dir, "server"), 256)
    server = await startServer("server", {
      DSTACK_SERVER_ADMIN_TOKEN: TOKEN,
      DSTACK_DATABASE_URL: "",
      DSTACK_FAULT: "",
      DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS: "60",
      FAULT_SERVER_DIR: disk.dir,
      FAULT_WORK_DIR: path.join(dir, "work")
    })
  }, 180_000)

  afterAll(async () => {
    await stopServer(server)
    disk?.unmount()
    await removeUnder(dir)
  }, 60_000)

  it("the server's disk full: uploads and submissions fail naming the disk, the server stays up, and works again once space is freed, losing no log line", async () => {
    const port = server!.port
    expect((await call(port, TOKEN, "/api/project/main/repos/init", { repo_id: "disk-repo", repo_info: { repo_type: "virtual" } })).status).toBe(200)
    const res = await call(port, TOKEN, "/api/project/main/runs/apply", taskSpec("through-full", [`for i in $(seq 1 ${LINES}); do echo "line $i"; sleep 0.4; done`]))
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    await waitFor(port, "through-full", (run) => run?.status === "running", 120_000)
    const deadline = Date.now() + 60_000
    while (!(await logsOf(port, TOKEN, "through-full")).includes("line 3\n") && Date.now() < deadline) await sleep(200)

    const filled = disk!.fill()
    console.log(`filled the server's disk with ${filled} bytes`)
    const answers: Array<{ what: string; status: number; text: string }> = []
    try {
      const upload = await uploadCode(port, Buffer.alloc(2 << 20, 7))
      answers.push({ what: "upload_code", ...upload })
      const apply = await call(port, TOKEN, "/api/project/main/runs/apply", taskSpec("during-full", ["echo accepted"]))
      answers.push({ what: "runs/apply", status: apply.status, text: JSON.stringify(apply.body).slice(0, 400) })
      await sleep(4_000)
      // Still up, and reading works.
      const list = await call(port, TOKEN, "/api/runs/list", { project_name: "main" })
      expect(list.status, JSON.stringify(list.body).slice(0, 300)).toBe(200)
      expect((await getRun(port, "through-full")).status, "the running job is not failed for the server's disk").toBe("running")
    } finally {
      disk!.free()
    }
    console.log(answers.map((a) => `${a.what}: ${a.status}: ${a.text}`).join("\n"))
    // What must write files (a code archive) is refused saying the disk is full; a submission
    // that fits in the database's room may be accepted, and is then run like any other.
    const upload = answers.find((a) => a.what === "upload_code")!
    expect(upload.status, upload.text).toBe(503)
    expect(upload.text).toMatch(/The server's disk is full \(no space left on device\)/)
    const apply = answers.find((a) => a.what === "runs/apply")!
    expect([200, 503], apply.text).toContain(apply.status)
    if (apply.status === 503) expect(apply.text).toMatch(/The server's disk is full/)
    for (const a of answers) expect(a.text, a.what).not.toMatch(/\bat .*\.ts:\d+/)
    expect(server!.process.exitCode).toBe(null)

    const run = await waitFor(port, "through-full", finished, 120_000)
    expect(run.status, JSON.stringify(run.jobs[0].job_submissions.at(-1)).slice(0, 600)).toBe("done")
    expect(await logsOf(port, TOKEN, "through-full")).toBe(Array.from({ length: LINES }, (_, i) => `line ${i + 1}\n`).join(""))
    if (apply.status === 200) {
      const accepted = await waitFor(port, "during-full", finished, 120_000)
      expect(accepted.status, `a run accepted while the disk was full: ${JSON.stringify(accepted.jobs?.[0]?.job_submissions?.at(-1)).slice(0, 800)}`).toBe("done")
    }
    // Works again.
    expect((await uploadCode(port, Buffer.alloc(2 << 20, 7))).status).toBe(200)
    expect((await call(port, TOKEN, "/api/project/main/runs/apply", taskSpec("after-full", ["echo back"]))).status).toBe(200)
    const after = await waitFor(port, "after-full", finished, 120_000)
    expect(after.status).toBe("done")
    expect(await logsOf(port, TOKEN, "after-full")).toBe("back\n")
  }, 400_000)
})


describeWith("tmpfs mounts (root)", mount.available, mount.reason, () => {
  let dir = ""
  let disk: SmallDisk | undefined
  let server: ServerProcess | undefined

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-runner-disk-"))
    disk = mountSmallDisk(path.join(dir, "work"), 64)
    server = await startServer("server", {
      DSTACK_SERVER_ADMIN_TOKEN: TOKEN,
      DSTACK_DATABASE_URL: "",
      DSTACK_FAULT: "",
      FAULT_SERVER_DIR: path.join(dir, "server"),
      FAULT_WORK_DIR: disk.dir,
      FAULT_MAX_INSTANCES: "1"
    })
  }, 180_000)

  afterAll(async () => {
    await stopServer(server)
    await reapUnder(dir)
    disk?.unmount()
    if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
  }, 60_000)

  // The tmpfs is the instance's disk: a job asks for less than its 64 MB.
  const smallTask = (name: string, commands: ReadonlyArray<string>) =>
    taskSpec(name, commands, { resources: { cpu: "1..", memory: "100MB..", disk: "10MB.." } })

  it("a runner whose disk fills fails its job with a reason saying so, and runs the next job once space is freed", async () => {
    const port = server!.port
    // The job fills its own working directory's disk.
    const res = await call(port, TOKEN, "/api/project/main/runs/apply", smallTask("fills-disk", ["echo start", "head -c 200000000 /dev/zero > big.bin", "echo never"]))
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    const run = await waitFor(port, "fills-disk", finished, 180_000)
    const sub = run.jobs[0].job_submissions.at(-1)
    console.log(`fills-disk: ${run.status} ${sub.termination_reason}: ${sub.termination_reason_message} exit ${sub.exit_status}`)
    expect(run.status).toBe("failed")
    expect(sub.termination_reason).toBe("executor_error")
    expect(sub.termination_reason_message ?? "").toMatch(/^the runner's disk is full: no space left on the filesystem of .* \(the job exited with status 1\)$/)
    expect(await logsOf(port, TOKEN, "fills-disk")).toMatch(/^start\n/)

    // The runner clears the failed job's files when it takes the next job: that one runs.
    expect((await call(port, TOKEN, "/api/project/main/runs/apply", smallTask("after-clear", ["echo cleared"]))).status).toBe(200)
    const cleared = await waitFor(port, "after-clear", finished, 180_000)
    expect(cleared.status, JSON.stringify(cleared.jobs[0].job_submissions.at(-1)).slice(0, 600)).toBe("done")

    // A disk filled by something else when the job starts: a job that writes a file fails
    // saying the disk is full.
    disk!.fill()
    let full: any
    try {
      expect((await call(port, TOKEN, "/api/project/main/runs/apply", smallTask("on-full-disk", ["echo hello", "echo data > out.txt"]))).status).toBe(200)
      full = await waitFor(port, "on-full-disk", finished, 180_000)
    } finally {
      disk!.free()
    }
    const fullSub = full.jobs[0].job_submissions.at(-1)
    console.log(`on-full-disk: ${full.status} ${fullSub.termination_reason}: ${fullSub.termination_reason_message}`)
    expect(full.status).toBe("failed")
    expect(fullSub.termination_reason).toBe("executor_error")
    expect(fullSub.termination_reason_message ?? "").toMatch(/^the runner's disk is full: no space left on the filesystem of /)

    // Space freed: the next job runs.
    expect((await call(port, TOKEN, "/api/project/main/runs/apply", smallTask("after-free", ["echo fine"]))).status).toBe(200)
    const after = await waitFor(port, "after-free", finished, 180_000)
    expect(after.status, JSON.stringify(after.jobs[0].job_submissions.at(-1)).slice(0, 600)).toBe("done")
    expect(await logsOf(port, TOKEN, "after-free")).toBe("fine\n")
  }, 600_000)
})
