// The runner's /api/exec WebSocket (ExecProtocol.ts), which the server's SSH proxy runs `ssh RUN`
// through, with the real process executor: a command beside a running job with its environment,
// its output by stream, stdin and its end, the exit status; the job's end hangs it up; no job
// running and a malformed request are refused in words; inactivity_duration counts /api/presence.
import { spawnSync } from "node:child_process"
import { describe, expect, it } from "vitest"
import WebSocket from "ws"
import type { RunningRunner } from "../../src/runner/serveRunner.ts"
import { postOk, processRunners, submitBody } from "./support.ts"

const hasPython = spawnSync("python3", ["-c", "import pty"]).status === 0
if (!hasPython) console.warn("exec.test.ts: the terminal case SKIPPED, no python3 with pty (the process executor's terminals need it)")
const startRunner = processRunners("dstack-ts-exec-")

const waitState = async (runner: RunningRunner, state: string) => {
  for (let i = 0; i < 400; i++) {
    const pulled = (await (await fetch(`${runner.url}/api/pull?timestamp=0`)).json()) as { job_states: Array<{ state: string; termination_reason?: string }> }
    const found = pulled.job_states.find((s) => s.state === state)
    if (found !== undefined) return found
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`the job never got to ${state}`)
}

/** Runs one exec: sends `start`, then `input` messages; collects output by stream and the replies. */
const exec = (runner: RunningRunner, start: unknown, input: ReadonlyArray<string | Uint8Array> = []) =>
  new Promise<{ stdout: string; stderr: string; replies: Array<any>; code: number }>((resolve, reject) => {
    const ws = new WebSocket(`${runner.url.replace("http", "ws")}/api/exec`)
    let stdout = ""
    let stderr = ""
    const replies: Array<any> = []
    ws.on("open", () => {
      ws.send(typeof start === "string" ? start : JSON.stringify(start))
      for (const m of input) ws.send(m, { binary: typeof m !== "string" })
    })
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (!isBinary) return void replies.push(JSON.parse(data.toString("utf8")))
      if (data[0] === 1) stdout += data.subarray(1).toString("utf8")
      else stderr += data.subarray(1).toString("utf8")
    })
    ws.on("close", (code) => resolve({ stdout, stderr, replies, code }))
    ws.on("error", reject)
  })

describe("the runner's /api/exec", () => {
  it("runs a command beside the running job, with its environment, stdin and exit status", async () => {
    const runner = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ commands: ["sleep 60"], env: { JOB_VAR: "from-the-job" } }))
    await postOk(runner, "/api/run")
    await waitState(runner, "running")
    const result = await exec(runner, { command: "echo $JOB_VAR $EXTRA; echo oops >&2; wc -c; exit 3", env: { EXTRA: "from-ssh" } }, [
      new TextEncoder().encode("12345"),
      JSON.stringify({ eof: true })
    ])
    expect(result.stdout).toMatch(/^from-the-job from-ssh\n\s*5\n$/)
    expect(result.stderr).toBe("oops\n")
    expect(result.replies).toEqual([{ started: true }, { exit: { code: 3 } }])
    expect(result.code).toBe(1000)
    const killed = await exec(runner, { command: "kill -TERM $$" })
    expect(killed.replies.at(-1)).toEqual({ exit: { signal: "TERM" } })
    await postOk(runner, "/api/stop", { abort: true })
  })

  it.skipIf(!hasPython)("gives a command a terminal of the asked size, resized on request", async () => {
    const runner = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ commands: ["sleep 60"] }))
    await postOk(runner, "/api/run")
    await waitState(runner, "running")
    const ws = new WebSocket(`${runner.url.replace("http", "ws")}/api/exec`)
    let stdout = ""
    const replies: Array<any> = []
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      if (!isBinary) return void replies.push(JSON.parse(data.toString("utf8")))
      stdout += data.subarray(1).toString("utf8")
      // Once the first size is out, resize and let the command go on.
      if (stdout.includes("30 100") && !stdout.includes("resized")) {
        stdout += "resized"
        ws.send(JSON.stringify({ resize: { cols: 120, rows: 40 } }))
        ws.send(new TextEncoder().encode("go\n"), { binary: true })
      }
    })
    ws.on("open", () => ws.send(JSON.stringify({ command: "stty size; test -t 0 && echo on-a-tty; read x; stty size", env: {}, tty: { cols: 100, rows: 30 } })))
    await new Promise((resolve) => ws.on("close", resolve))
    expect(stdout).toMatch(/^30 100\r\n/)
    expect(stdout).toContain("on-a-tty\r\n")
    expect(stdout).toMatch(/resized[\s\S]*40 120\r\n$/)
    expect(replies.at(-1)).toEqual({ exit: { code: 0 } })
    await postOk(runner, "/api/stop", { abort: true })
  })

  it("hangs a command up when the job ends", async () => {
    const runner = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ commands: ["sleep 60"] }))
    await postOk(runner, "/api/run")
    await waitState(runner, "running")
    const pending = exec(runner, { command: "sleep 60" })
    await new Promise((r) => setTimeout(r, 300))
    await postOk(runner, "/api/stop", { abort: true })
    const result = await pending
    expect(result.replies.at(-1)).toEqual({ exit: { signal: "HUP" } })
  })

  it("refuses when no job runs, and a first message that is no request", async () => {
    const runner = await startRunner()
    const idle = await exec(runner, { command: "true" })
    expect(idle.replies).toEqual([{ error: expect.stringMatching(/no job is running/) }])
    const malformed = await exec(runner, "not json")
    expect(malformed.replies).toEqual([{ error: expect.stringMatching(/the first message must be the exec request/) }])
    expect(malformed.code).toBe(1008)
  })

  it("stops a job with inactivity_duration once no presence socket has been open that long", async () => {
    const runner = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ commands: ["sleep 60"] }, { inactivity_duration: 1 }))
    await postOk(runner, "/api/run")
    await waitState(runner, "running")
    const presence = new WebSocket(`${runner.url.replace("http", "ws")}/api/presence`)
    await new Promise((r) => presence.on("open", r))
    // Held open past the duration: the job keeps running.
    await new Promise((r) => setTimeout(r, 1800))
    const during = (await (await fetch(`${runner.url}/api/pull?timestamp=0`)).json()) as { job_states: Array<{ state: string }> }
    expect(during.job_states.map((s) => s.state)).not.toContain("terminated")
    presence.close()
    const ended = await waitState(runner, "terminated")
    expect(ended.termination_reason).toBe("inactivity_duration_exceeded")
  })
})
