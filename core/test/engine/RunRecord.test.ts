// The stored run record: encodeRecord encodes by parts (each spec and submission once per object)
// for speed; it must give exactly what the schema's own encoding gives, for runs in every shape.
import { Schema } from "effect"
import { describe, expect, it } from "vitest"
import { Job } from "../../src/domain/Job.ts"
import { Run } from "../../src/domain/Run.ts"
import { decodeRow, ENCODED_BY_PARTS, encodeRecord, RunRecord } from "../../src/engine/RunRecord.ts"
import { Effect } from "effect"
import { makeJob, makeRun, T0 } from "./fixtures.ts"

const schemaEncode = Schema.encodeSync(RunRecord)
const withoutShape = (doc: Record<string, unknown>) => {
  const { run_wire_shape: _shape, ...rest } = doc
  return rest
}
const roundTrip = (doc: unknown) => JSON.parse(JSON.stringify(doc))

const records = (): Array<[string, RunRecord]> => {
  const submitted = makeRun([makeJob()])
  const running = makeRun([makeJob({ status: "running", provisioned: true })], { status: "running" })
  const retried = makeRun(
    [makeJob({ status: "failed", reason: "container_exited_with_error", history: [{ id: "old", submission_num: 0, submitted_at: new Date(T0).toISOString(), last_processed_at: new Date(T0).toISOString(), status: "failed", termination_reason: "instance_unreachable" }] })],
    { status: "failed", reason: "job_failed" }
  )
  const multi = makeRun([makeJob({ jobNum: 0, jobsPerReplica: 2, status: "running", provisioned: true }), makeJob({ jobNum: 1, jobsPerReplica: 2 })], { status: "provisioning" })
  const withLatest = new Run({ ...running, latestJobSubmission: running.jobs[0].jobSubmissions[0], cost: 1.5 })
  return [
    ["a submitted run", { run: submitted, submittedToRunner: [] }],
    ["a running run handed to its runner", { run: running, submittedToRunner: [running.jobs[0].jobSubmissions[0].id] }],
    ["a failed run with an earlier submission and a stop request", { run: retried, stopRequest: { abort: true }, wakeAt: T0 + 5000, submittedToRunner: [] }],
    ["a run of two jobs", { run: multi, submittedToRunner: [] }],
    ["a run with latest_job_submission and cost", { run: withLatest, submittedToRunner: [] }]
  ]
}

describe("encodeRecord", () => {
  for (const [name, record] of records()) {
    it(`gives the schema's encoding for ${name}, and decodes back to the same record`, () => {
      const fast = encodeRecord(record)
      expect(typeof fast.run_wire_shape).toBe("string")
      expect(roundTrip(withoutShape(fast))).toEqual(roundTrip(schemaEncode(record)))
      // Encoding the same objects again (the parts come from the cache) gives the same again.
      expect(roundTrip(encodeRecord(record))).toEqual(roundTrip(fast))
      const back = Effect.runSync(decodeRow({ id: record.run.id, version: 1, doc: roundTrip(fast) } as any)).record
      expect(roundTrip(withoutShape(encodeRecord(back)))).toEqual(roundTrip(schemaEncode(record)))
    })
  }

  it("follows a transition: a changed submission is encoded anew, unchanged parts are reused", () => {
    const run = makeRun([makeJob()])
    const before = encodeRecord({ run, submittedToRunner: [] })
    const sub = run.jobs[0].jobSubmissions[0]
    const changed = new Run({ ...run, status: "provisioning", jobs: [new Job({ ...run.jobs[0], jobSubmissions: [new (sub.constructor as any)({ ...sub, status: "provisioning" })] })] })
    const after = encodeRecord({ run: changed, submittedToRunner: [] })
    expect(after.run.status).toBe("provisioning")
    expect(after.run.jobs![0].job_submissions![0].status).toBe("provisioning")
    expect(before.run.jobs![0].job_submissions![0].status).toBe("submitted")
    // The run spec and job spec objects did not change: their encodings are the same objects.
    expect(after.run.run_spec).toBe(before.run.run_spec)
    expect(after.run.jobs![0].job_spec).toBe(before.run.jobs![0].job_spec)
  })

  it("knows every field of Run and Job (a new field must be added to the encoder by parts)", () => {
    // Run: the parts plus the scalars encoded by the schema; Job: exactly the parts.
    expect(Object.keys(Job.fields).sort()).toEqual([...ENCODED_BY_PARTS.job].sort())
    for (const part of ENCODED_BY_PARTS.run) expect(Object.keys(Run.fields)).toContain(part)
  })
})
