// Offers and jobs decode from the upstream snake_case wire, encode back, and decode again.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { InstanceOffer, isOfferAvailable } from "../../../src/domain/Offer.ts"
import { Job, JobSpec, lastProvisionedSubmission, latestSubmission } from "../../../src/domain/Job.ts"
import { jobWire, offerWire } from "./fixtures.ts"

const roundTrip = <A, I>(schema: Schema.Schema<A, I>, wire: unknown) =>
  Effect.gen(function*() {
    const decoded = yield* Schema.decodeUnknown(schema)(wire)
    const encoded = yield* Schema.encode(schema)(decoded)
    const again = yield* Schema.decodeUnknown(schema)(JSON.parse(JSON.stringify(encoded)))
    expect(again).toEqual(decoded)
    return { decoded, encoded }
  })

describe("InstanceOffer", () => {
  it.effect("round-trips an offer with camelCase fields", () =>
    Effect.gen(function*() {
      const { decoded, encoded } = yield* roundTrip(InstanceOffer, offerWire)
      expect(decoded.instance.resources.memoryMib).toBe(1179648)
      expect(decoded.instance.resources.gpus).toHaveLength(8)
      expect(decoded.instance.resources.cpuArch).toBe("x86")
      expect(isOfferAvailable(decoded)).toBe(true)
      expect(encoded).toMatchObject({ instance: { resources: { memory_mib: 1179648, disk: { size_mib: 102400 } } } })
    }))

  it.effect("an idle fleet instance is an available offer naming its instance", () =>
    Effect.gen(function*() {
      const { decoded } = yield* roundTrip(InstanceOffer, {
        ...offerWire,
        backend: "remote",
        availability: "idle",
        instance_id: "inst-1",
        fleet_name: "my-fleet"
      })
      expect(decoded.fleetName).toBe("my-fleet")
      expect(isOfferAvailable(decoded)).toBe(true)
      const busy = yield* Schema.decodeUnknown(InstanceOffer)({ ...offerWire, availability: "no_quota" })
      expect(isOfferAvailable(busy)).toBe(false)
    }))

  it.effect("rejects an unknown availability and a negative price, naming the field", () =>
    Effect.gen(function*() {
      const bad = yield* Effect.flip(Schema.decodeUnknown(InstanceOffer)({ ...offerWire, availability: "maybe" }))
      expect(String(bad)).toContain("availability")
      const negative = yield* Effect.flip(Schema.decodeUnknown(InstanceOffer)({ ...offerWire, price: -1 }))
      expect(String(negative)).toContain("price")
    }))
})

describe("JobSpec and Job", () => {
  it.effect("round-trips a job with a remote repo, volumes, app specs and two submissions", () =>
    Effect.gen(function*() {
      const { decoded, encoded } = yield* roundTrip(Job, jobWire)
      const spec = decoded.jobSpec
      expect(spec.commands).toEqual(["pip install -r requirements.txt", "python train.py"])
      expect(spec.imageName).toBe("dstackai/base:py3.12-0.7-cuda-12.1")
      expect(spec.entrypoint).toBeUndefined()
      expect(spec.maxDuration).toBe(7200)
      expect(spec.retry?.onEvents).toEqual(["no-capacity", "error"])
      expect(spec.requirements.spot).toBeNull()
      expect(spec.requirements.resources.gpu.count).toEqual({ min: 8, max: 8 })
      expect(spec.repoData).toMatchObject({ repoType: "remote", repoBranch: "main" })
      expect(spec.volumes[1]).toEqual({ instancePath: "/mnt/cache", path: "/cache" })
      expect(decoded.jobSubmissions[0].submittedAt).toEqual(new Date("2025-01-01T10:00:00.000Z"))
      expect(decoded.jobSubmissions[0].jobProvisioningData?.instanceType.resources.gpus).toHaveLength(8)
      expect(latestSubmission(decoded)?.submissionNum).toBe(1)
      expect(lastProvisionedSubmission(decoded)?.submissionNum).toBe(0)
      const wireSpec = (encoded as { job_spec: Record<string, unknown> }).job_spec
      expect(wireSpec.job_name).toBe("train-0-0")
      expect(wireSpec.stop_duration).toBe(300)
      expect(wireSpec.repo_data).toMatchObject({ repo_type: "remote", repo_url: expect.any(String) })
    }))

  it.effect("a minimal job spec gets the upstream defaults and runs on the host (no image)", () =>
    Effect.gen(function*() {
      const spec = yield* Schema.decodeUnknown(JobSpec)({ job_name: "hello-0-0", requirements: { resources: {} } })
      expect(spec.imageName).toBeUndefined()
      expect(spec.commands).toEqual([])
      expect(spec.env).toEqual({})
      expect(spec.privileged).toBe(false)
      expect(spec.maxDuration).toBeNull()
      expect(spec.stopDuration).toBe(300)
      expect(spec.jobsPerReplica).toBe(1)
      expect(spec.requirements.resources.memory).toEqual({ min: 8 })
      const job = yield* Schema.decodeUnknown(Job)({ job_spec: { job_name: "x", requirements: { resources: {} } } })
      expect(latestSubmission(job)).toBeUndefined()
      expect(lastProvisionedSubmission(job)).toBeUndefined()
    }))

  it.effect("rejects bad job data with the path of the field", () =>
    Effect.gen(function*() {
      const noName = yield* Effect.flip(Schema.decodeUnknown(JobSpec)({ requirements: { resources: {} } }))
      expect(String(noName)).toContain("job_name")
      const badCommands = yield* Effect.flip(
        Schema.decodeUnknown(JobSpec)({ job_name: "x", commands: "echo hi", requirements: { resources: {} } })
      )
      expect(String(badCommands)).toContain("commands")
      const badRepo = yield* Effect.flip(
        Schema.decodeUnknown(JobSpec)({ job_name: "x", requirements: { resources: {} }, repo_data: { repo_type: "Not A Type!" } })
      )
      expect(String(badRepo)).toContain("repo_type")
      const badStatus = yield* Effect.flip(
        Schema.decodeUnknown(Job)({ ...jobWire, job_submissions: [{ ...jobWire.job_submissions[1], status: "idle" }] })
      )
      expect(String(badStatus)).toContain("status")
    }))
})
