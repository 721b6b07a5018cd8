// Instances, fleets, runs and run plans round-trip through the upstream snake_case wire.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Fleet, idleInstances } from "../../../src/domain/Fleet.ts"
import { Instance, instanceIdleDeadline, runnerAddress } from "../../../src/domain/Instance.ts"
import { InstanceOffer } from "../../../src/domain/Offer.ts"
import { newestJobSubmission, Run, runCost, RunSpec } from "../../../src/domain/Run.ts"
import { makeJobPlan, RunPlan } from "../../../src/domain/RunPlan.ts"
import { jobWire, offerWire } from "./fixtures.ts"

const roundTrip = <A, I>(schema: Schema.Schema<A, I>, wire: unknown) =>
  Effect.gen(function*() {
    const decoded = yield* Schema.decodeUnknown(schema)(wire)
    const encoded = yield* Schema.encode(schema)(decoded)
    const again = yield* Schema.decodeUnknown(schema)(JSON.parse(JSON.stringify(encoded)))
    expect(again).toEqual(decoded)
    return { decoded, encoded: encoded as Record<string, unknown> }
  })

const instanceWire = {
  id: "inst-1",
  project_name: "main",
  backend: "remote",
  instance_type: offerWire.instance,
  name: "my-fleet-0",
  fleet_id: "fleet-1",
  fleet_name: "my-fleet",
  instance_num: 0,
  hostname: "10.0.0.7",
  ssh_port: 22,
  username: "ubuntu",
  status: "idle",
  created: "2025-01-01T09:00:00.000Z",
  last_job_processed_at: "2025-01-01T10:00:00.000Z",
  region: "remote",
  price: 0,
  idle_duration: 300
}

export const runSpecWire = {
  run_name: "train",
  repo_id: "dstack-examples",
  repo_data: { repo_type: "remote", repo_url: "https://github.com/dstackai/dstack-examples", repo_branch: "main", repo_hash: "abc" },
  repo_code_hash: "ab12cd",
  working_dir: ".",
  configuration_path: ".dstack.yml",
  configuration: {
    type: "task",
    nodes: 2,
    image: "dstackai/base:py3.12-0.7-cuda-12.1",
    commands: ["pip install -r requirements.txt", "python train.py"],
    env: { HF_TOKEN: "x" },
    resources: { gpu: "A100:40GB:8" },
    retry: { on_events: ["no-capacity"], duration: "2h" },
    max_duration: "6h",
    spot_policy: "auto"
  },
  ssh_key_pub: "ssh-ed25519 AAAA user@host"
}

const runWire = {
  id: "run-1",
  project_name: "main",
  user: "admin",
  submitted_at: "2025-01-01T10:00:00.000Z",
  last_processed_at: "2025-01-01T10:06:01.000Z",
  status: "submitted",
  termination_reason: null,
  run_spec: runSpecWire,
  jobs: [jobWire],
  latest_job_submission: jobWire.job_submissions[1],
  cost: 2.08,
  service: null,
  deleted: false
}

describe("Instance", () => {
  it.effect("round-trips and tells its runner address and idle deadline", () =>
    Effect.gen(function*() {
      const { decoded, encoded } = yield* roundTrip(Instance, instanceWire)
      expect(decoded.fleetName).toBe("my-fleet")
      expect(decoded.unreachable).toBe(false)
      expect(encoded.last_job_processed_at).toBe("2025-01-01T10:00:00.000Z")
      expect(runnerAddress(decoded)).toEqual({ host: "10.0.0.7", port: 10999 })
      expect(instanceIdleDeadline(decoded)).toBe(Date.parse("2025-01-01T10:05:00.000Z"))
      const busy = yield* Schema.decodeUnknown(Instance)({ ...instanceWire, status: "busy", hostname: null, runner_port: 4000 })
      expect(instanceIdleDeadline(busy)).toBeNull()
      expect(runnerAddress(busy)).toBeNull()
      const forever = yield* Schema.decodeUnknown(Instance)({ ...instanceWire, idle_duration: null })
      expect(instanceIdleDeadline(forever)).toBeNull()
    }))

  it.effect("rejects an unknown status", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Schema.decodeUnknown(Instance)({ ...instanceWire, status: "sleeping" }))
      expect(String(error)).toContain("status")
    }))
})

describe("Fleet", () => {
  it.effect("round-trips an SSH fleet with its instances", () =>
    Effect.gen(function*() {
      const { decoded } = yield* roundTrip(Fleet, {
        id: "fleet-1",
        name: "my-fleet",
        project_name: "main",
        spec: { configuration: { type: "fleet", name: "my-fleet", ssh_config: { user: "ubuntu", hosts: ["10.0.0.7", "10.0.0.8"] } } },
        created_at: "2025-01-01T09:00:00.000Z",
        status: "active",
        instances: [instanceWire, { ...instanceWire, id: "inst-2", instance_num: 1, status: "busy" }]
      })
      expect(decoded.spec.configuration.sshConfig?.hosts.map((h) => h.hostname)).toEqual(["10.0.0.7", "10.0.0.8"])
      expect(idleInstances(decoded).map((i) => i.id)).toEqual(["inst-1"])
    }))
})

describe("RunSpec and Run", () => {
  it.effect("round-trips a run with its spec, configuration and jobs", () =>
    Effect.gen(function*() {
      const { decoded, encoded } = yield* roundTrip(Run, runWire)
      expect(decoded.runSpec.configuration.type).toBe("task")
      expect(decoded.runSpec.configuration.maxDuration).toBe(6 * 3600)
      expect(decoded.runSpec.repoData.repoType).toBe("remote")
      expect(decoded.jobs[0].jobSpec.jobName).toBe("train-0-0")
      expect(decoded.terminationReason).toBeUndefined()
      expect((encoded.run_spec as Record<string, unknown>).repo_id).toBe("dstack-examples")
      expect(newestJobSubmission(decoded)?.submissionNum).toBe(1)
    }))

  it.effect("a run spec without a run name or code hash is fine; a bad configuration is not", () =>
    Effect.gen(function*() {
      const spec = yield* Schema.decodeUnknown(RunSpec)({ repo_id: "r", repo_data: { repo_type: "virtual" }, configuration: { type: "service", port: 8000, commands: ["python app.py"] } })
      expect(spec.runName).toBeUndefined()
      expect(spec.configuration.type).toBe("service")
      const bad = yield* Effect.flip(Schema.decodeUnknown(RunSpec)({ ...runSpecWire, configuration: { type: "fleet", nodes: 1 } }))
      expect(String(bad)).toContain("type")
    }))

  it.effect("cost: price per hour × time on the instance, until the end or now", () =>
    Effect.gen(function*() {
      const run = yield* Schema.decodeUnknown(Run)(runWire)
      // submission 0: 12.5 $/h, 10:00 → 10:05 finished; submission 1 never reached an instance.
      expect(runCost(run, Date.parse("2025-01-01T12:00:00.000Z"))).toBeCloseTo(12.5 / 12, 6)
    }))
})

describe("RunPlan", () => {
  it.effect("round-trips a plan and makes job plans with totals and max price", () =>
    Effect.gen(function*() {
      const run = yield* Schema.decodeUnknown(Run)(runWire)
      const offers = yield* Effect.forEach([1, 2, 3], (price) => Schema.decodeUnknown(InstanceOffer)({ ...offerWire, price }))
      const jobPlan = makeJobPlan(run.jobs[0].jobSpec, offers, 2)
      expect(jobPlan.offers.map((o) => o.price)).toEqual([1, 2])
      expect(jobPlan.totalOffers).toBe(3)
      expect(jobPlan.maxPrice).toBe(3)
      expect(makeJobPlan(run.jobs[0].jobSpec, []).maxPrice).toBeNull()
      const plan = new RunPlan({ projectName: "main", user: "admin", runSpec: run.runSpec, jobPlans: [jobPlan], action: "create" })
      const encoded = yield* Schema.encode(RunPlan)(plan)
      const { decoded } = yield* roundTrip(RunPlan, JSON.parse(JSON.stringify(encoded)))
      expect(decoded.jobPlans[0].totalOffers).toBe(3)
      expect((encoded as unknown as { job_plans: Array<{ total_offers: number }> }).job_plans[0].total_offers).toBe(3)
      const badAction = yield* Effect.flip(Schema.decodeUnknown(RunPlan)({ ...JSON.parse(JSON.stringify(encoded)), action: "replace" }))
      expect(String(badAction)).toContain("action")
    }))
})
