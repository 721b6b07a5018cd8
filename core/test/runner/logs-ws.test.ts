// The runner's /logs_ws WebSocket, as upstream's CLI reads attached logs from it: raw output
// bytes per message from the start or from `start_time`, closed normally once the job ended;
// a bad start_time is 400 and another path 404, both before any upgrade.
import { describe, expect, it } from "vitest"
import WebSocket from "ws"
import { postOk, processRunners, submitBody } from "./support.ts"

const startRunner = processRunners("dstack-ts-logsws-")

/** Reads a WebSocket to its close: the messages as text, whether each was binary, and the close code. */
const readAll = (url: string) =>
  new Promise<{ messages: Array<string>; binary: Array<boolean>; code: number }>((resolve, reject) => {
    const ws = new WebSocket(url)
    const messages: Array<string> = []
    const binary: Array<boolean> = []
    ws.on("message", (data: Buffer, isBinary: boolean) => {
      messages.push(data.toString("utf8"))
      binary.push(isBinary)
    })
    ws.on("close", (code) => resolve({ messages, binary, code }))
    ws.on("unexpected-response", (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)))
    ws.on("error", reject)
  })

const refusal = (url: string) =>
  new Promise<{ status: number | undefined; body: string }>((resolve) => {
    const ws = new WebSocket(url)
    ws.on("unexpected-response", (_req, res) => {
      let body = ""
      res.on("data", (d: Buffer) => (body += d))
      res.on("end", () => resolve({ status: res.statusCode, body }))
    })
    ws.on("open", () => resolve({ status: 101, body: "" }))
    ws.on("error", () => {})
  })

describe("the runner's /logs_ws", () => {
  it("sends the job's output as binary messages live and closes normally when the job ends", async () => {
    const runner = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ commands: ["echo first", "sleep 0.5", "echo second"] }))
    const ws = readAll(`${runner.url.replace("http", "ws")}/logs_ws`)
    await postOk(runner, "/api/run")
    const { messages, binary, code } = await ws
    expect(messages.join("")).toBe("first\nsecond\n")
    expect(binary.every((b) => b)).toBe(true)
    expect(code).toBe(1000)
    // After the end: the whole output again, then the close.
    const again = await readAll(`${runner.url.replace("http", "ws")}/logs_ws`)
    expect(again.messages.join("")).toBe("first\nsecond\n")
  })

  it("starts at start_time, and refuses a bad start_time and other paths before upgrading", async () => {
    const runner = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ commands: ["echo early", "sleep 2", "echo late"] }))
    await postOk(runner, "/api/run")
    // Once "early" is out (the job then sleeps before "late"), the millisecond after its
    // timestamp is between the two. (Not this process's clock: the runner's timestamps run
    // strictly upward, so events within one millisecond can stand a few ms ahead of it.)
    let early = 0
    for (;;) {
      const pulled = await (await fetch(`${runner.url}/api/pull?timestamp=0`)).json()
      if (pulled.job_logs.length > 0) {
        early = Math.max(...pulled.job_logs.map((l: { timestamp: number }) => l.timestamp))
        break
      }
      await new Promise((r) => setTimeout(r, 50))
    }
    const middle = new Date(early + 1).toISOString()
    const { messages } = await readAll(`${runner.url.replace("http", "ws")}/logs_ws?start_time=${encodeURIComponent(middle)}`)
    expect(messages.join("")).toBe("late\n")
    const bad = await refusal(`${runner.url.replace("http", "ws")}/logs_ws?start_time=yesterday`)
    expect(bad).toEqual({ status: 400, body: 'start_time must be an ISO 8601 time, not "yesterday"' })
    const other = await refusal(`${runner.url.replace("http", "ws")}/other`)
    expect(other).toEqual({ status: 404, body: "No WebSocket at /other (the runner's is /logs_ws)" })
  })
})
