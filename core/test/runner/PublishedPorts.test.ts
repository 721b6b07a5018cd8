// Ports published for the job outside the runner (a Kubernetes pod's NodePorts): read from
// DSTACK_RUNNER_PUBLISHED_PORTS, refused naming the variable when malformed, and reported in
// job_runtime_data, where the server's attach and services proxy look for a job's ports.
import { afterEach, describe, expect, it } from "vitest"
import executorProcess from "@dstack-ts/executor-process"
import { parsePublishedPorts } from "../../src/runner/RunnerMain.ts"
import type { RunningRunner } from "../../src/runner/serveRunner.ts"
import { serveRunner } from "../../src/runner/serveRunner.ts"
import { tmpDir } from "./support.ts"

const runners: Array<RunningRunner> = []
afterEach(async () => {
  await Promise.all(runners.splice(0).map((r) => r.close()))
})

describe("published ports", () => {
  it("parses container port → host port, nothing when unset", () => {
    expect(parsePublishedPorts('{"8000":31234,"10999":30001}')).toEqual([{ containerPort: 8000, hostPort: 31234 }, { containerPort: 10999, hostPort: 30001 }])
    expect(parsePublishedPorts(undefined)).toEqual([])
    expect(parsePublishedPorts("")).toEqual([])
  })

  it("refuses malformed values, naming the variable and the port", () => {
    expect(() => parsePublishedPorts("8000:31234")).toThrow(/^DSTACK_RUNNER_PUBLISHED_PORTS: not JSON/)
    expect(() => parsePublishedPorts("[8000]")).toThrow(/DSTACK_RUNNER_PUBLISHED_PORTS: not an object/)
    expect(() => parsePublishedPorts('{"http":31234}')).toThrow(/http is not a port/)
    expect(() => parsePublishedPorts('{"8000":"31234"}')).toThrow(/the host port of 8000 is not a port/)
    expect(() => parsePublishedPorts('{"8000":70000}')).toThrow(/the host port of 8000 is not a port/)
  })

  it("are reported in job_runtime_data", async () => {
    const runner = await serveRunner({ port: 0, workDir: tmpDir("dstack-ts-runner-"), plugins: [executorProcess], publishedPorts: [{ containerPort: 8000, hostPort: 31234 }] })
    runners.push(runner)
    expect(await (await fetch(`${runner.url}/api/job_runtime_data`)).json()).toEqual({ network_mode: "host", ports: { "8000": 31234 } })
  })
})
