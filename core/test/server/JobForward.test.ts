// openJobForward asks the job's runner where a job port is published (`/api/job_runtime_data`)
// once per running submission and port: later forwards of the same submission go straight to the
// host port it answered, a new submission (another job on the same instance) asks again, and an
// answer that did not come is not kept. The transport here is this test's: it counts the runner's
// requests and records where each forward went; `dstack attach` through the real ssh transport
// is test/e2e/attach-netns.test.ts.
import { Effect, Exit, Scope } from "effect"
import { describe, expect, it } from "vitest"
import * as Compute from "../../src/engine/Compute.ts"
import type { RunnerTarget, RunnerTransport } from "../../src/ports/RunnerTransport.ts"
import { openJobForward } from "../../src/server/JobForward.ts"
import { provisioningData } from "../engine/fixtures.ts"
import { JobProvisioningData } from "../../src/domain/Job.ts"

/** A transport whose runner answers `answer()` to `/api/job_runtime_data`; it counts the asks and records each forward's remote port. */
const recordingTransport = (answer: () => Response) => {
  const asked: Array<string> = []
  const forwardedTo: Array<number> = []
  const transport: RunnerTransport = {
    name: "recording",
    connect: (target: RunnerTarget) =>
      Effect.succeed({
        baseUrl: `http://${target.hostname}:${target.runnerPort}`,
        fetch: (path: string) => Effect.sync(() => (asked.push(path), answer()))
      }),
    forward: (_target, _localPort, remotePort) => Effect.sync(() => (forwardedTo.push(remotePort), { localHost: "127.0.0.1", localPort: 40000 + forwardedTo.length, remotePort }))
  }
  const compute = {
    transport: () => Effect.succeed(transport),
    target: (_project: string, pd: JobProvisioningData) => Effect.succeed({ hostname: pd.hostname ?? "", runnerPort: 10999 })
  } as unknown as Compute.ComputeService
  return { asked, forwardedTo, compute }
}

const pd = new JobProvisioningData({ ...provisioningData(), hostname: "10.0.0.7" })

const forward = (compute: Compute.ComputeService, port: number, submissionId?: string) =>
  Effect.runPromise(
    Effect.gen(function* () {
      const scope = yield* Scope.make()
      const fwd = yield* openJobForward("main", pd, port, submissionId).pipe(
        Scope.extend(scope),
        Effect.provideService(Compute.Compute, compute),
        Effect.mapError(({ error }) => new Error(error.message ?? error.reason))
      )
      yield* Scope.close(scope, Exit.void)
      return fwd
    })
  )

describe("openJobForward", () => {
  it("asks the runner once per submission and port, and forwards to the host port it answered", async () => {
    const t = recordingTransport(() => Response.json({ ports: { "8080": 32768 } }))
    const sub = crypto.randomUUID()
    for (let i = 0; i < 3; i++) expect((await forward(t.compute, 8080, sub)).remotePort).toBe(32768)
    expect(t.asked).toEqual(["/api/job_runtime_data"])
    expect(t.forwardedTo).toEqual([32768, 32768, 32768])

    // A port the runner does not publish (a process job listens on the host): the port itself, also remembered.
    expect((await forward(t.compute, 9000, sub)).remotePort).toBe(9000)
    expect((await forward(t.compute, 9000, sub)).remotePort).toBe(9000)
    expect(t.asked).toHaveLength(2)

    // Another submission on the same instance asks again.
    await forward(t.compute, 8080, crypto.randomUUID())
    expect(t.asked).toHaveLength(3)
  })

  it("does not keep an answer that did not come, and asks every time without a submission", async () => {
    let status = 503
    const t = recordingTransport(() => (status === 200 ? Response.json({ ports: { "8080": 32800 } }) : new Response("busy", { status })))
    const sub = crypto.randomUUID()
    expect((await forward(t.compute, 8080, sub)).remotePort).toBe(8080)
    status = 200
    expect((await forward(t.compute, 8080, sub)).remotePort).toBe(32800)
    expect((await forward(t.compute, 8080, sub)).remotePort).toBe(32800)
    expect(t.asked).toHaveLength(2)

    await forward(t.compute, 8080)
    await forward(t.compute, 8080)
    expect(t.asked).toHaveLength(4)
  })
})
