// The docker executor passes core's Executor conformance suite (with dockerd and a locally
// imported busybox image), and its plugin contributes it.
import { testExecutor } from "@dstack-ts/core/testing"
import { describe, expect, it } from "vitest"
import { describeWith } from "../../../test/support/components.ts"
import { BUSYBOX_IMAGE, dockerUnavailableReason, ensureBusyboxImage } from "../../../test/support/docker.ts"
import plugin, { DockerExecutor } from "../src/index.ts"

describe("the plugin", () => {
  it("contributes the executor docker, named by its package", () => {
    expect(plugin.name).toBe("@dstack-ts/executor-docker")
    expect(Object.keys(plugin.executors ?? {})).toEqual(["docker"])
    expect(plugin.executors!.docker.name).toBe("docker")
  })
})

const unavailable = await dockerUnavailableReason()
if (unavailable === undefined) await ensureBusyboxImage()

describeWith("docker", unavailable === undefined, unavailable ?? "", () => {
  testExecutor("docker", DockerExecutor.make(), {
    spec: { image: BUSYBOX_IMAGE },
    startFailure: { spec: { image: "dstack-ts-no-such-image:never" }, reason: "CreatingContainer" }
  })
})
