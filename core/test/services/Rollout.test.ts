// The rolling deployment's steps and the in-place update rules, as pure functions.
import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import { Job, JobSubmission } from "../../src/domain/Job.ts"
import { RunSpec } from "../../src/domain/Run.ts"
import { jobSpecsFromRunSpec } from "../../src/domain/RunJobSpecs.ts"
import { checkServiceUpdate, isUpToDate } from "../../src/services/Deployment.ts"
import { type RolloutReplica, rolloutStep } from "../../src/services/Rollout.ts"

const r = (id: string, replicaNum: number, upToDate: boolean, ready: boolean): RolloutReplica => ({ id, replicaNum, upToDate, ready })

describe("rolloutStep", () => {
  it("does nothing when every replica is up to date", () => {
    expect(rolloutStep([r("a", 0, true, true), r("b", 1, true, false)], 2)).toEqual({ start: false, drain: undefined })
  })
  it("starts one new replica at a time (max surge 1) and drains an old one only once a new one is ready", () => {
    // Two old: start one new.
    expect(rolloutStep([r("a", 0, false, true), r("b", 1, false, true)], 2)).toEqual({ start: true, drain: undefined })
    // The new one starting: wait.
    expect(rolloutStep([r("a", 0, false, true), r("b", 1, false, true), r("c", 2, true, false)], 2)).toEqual({ start: false, drain: undefined })
    // Ready: drain the oldest; no second new replica while three serve.
    expect(rolloutStep([r("a", 0, false, true), r("b", 1, false, true), r("c", 2, true, true)], 2)).toEqual({ start: false, drain: "a" })
    // One old left and one new: the next new one.
    expect(rolloutStep([r("b", 1, false, true), r("c", 2, true, true)], 2)).toEqual({ start: true, drain: undefined })
    expect(rolloutStep([r("b", 1, false, true), r("c", 2, true, true), r("d", 3, true, true)], 2)).toEqual({ start: false, drain: "b" })
  })
  it("drains an old replica still starting before a serving one", () => {
    expect(rolloutStep([r("a", 0, false, true), r("b", 1, false, false), r("c", 2, true, true)], 2)).toEqual({ start: false, drain: "b" })
  })
  it("drains old replicas of a service scaled to zero without starting new ones", () => {
    expect(rolloutStep([r("a", 0, false, true)], 0)).toEqual({ start: false, drain: "a" })
  })
  it("keeps the old replicas while the new one never becomes ready", () => {
    const stuck = [r("a", 0, false, true), r("b", 1, false, true), r("c", 2, true, false)]
    expect(rolloutStep(stuck, 2)).toEqual({ start: false, drain: undefined })
  })
})

const spec = (configuration: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  Schema.decodeUnknownSync(RunSpec)({
    run_name: "svc",
    repo_id: "r",
    repo_data: { repo_type: "virtual" },
    configuration: { type: "service", commands: ["serve"], port: 8000, ...configuration },
    ...extra
  })

describe("in-place updates of a service", () => {
  it("allows upstream's updatable fields and names the changed ones", () => {
    expect(checkServiceUpdate(spec({ env: { V: "1" } }), spec({ env: { V: "2" }, replicas: 2 }))).toEqual({ changed: ["configuration.env", "configuration.replicas"] })
  })
  it("refuses other fields, naming them", () => {
    const refused = checkServiceUpdate(spec({}), spec({ auth: false, strip_prefix: false }))
    expect("refused" in refused && refused.refused).toMatch(/\[auth, strip_prefix\]/)
    const other = checkServiceUpdate(spec({}), spec({}, { repo_id: "other" }))
    expect("refused" in other && other.refused).toMatch(/\[repo_id\]/)
  })
  it("a job is up to date when the spec gives the same job spec for its replica: replicas and scaling alone change none", () => {
    const v1 = spec({ env: { V: "1" } })
    const job = new Job({ jobSpec: jobSpecsFromRunSpec(v1, { replicas: 2 })[1], jobSubmissions: [new JobSubmission({ id: "s", submittedAt: new Date(), lastProcessedAt: new Date(), status: "running" })] })
    expect(isUpToDate(v1, job)).toBe(true)
    expect(isUpToDate(spec({ env: { V: "1" }, replicas: "1..4", scaling: { metric: "rps", target: 5 } }), job)).toBe(true)
    expect(isUpToDate(spec({ env: { V: "2" } }), job)).toBe(false)
    expect(isUpToDate(spec({ env: { V: "1" }, commands: ["serve --new"] }), job)).toBe(false)
  })
})
