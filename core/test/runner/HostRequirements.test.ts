import { describe, expect, it } from "vitest"
import { unmetHostRequirements, type Probe } from "../../src/runner/HostRequirements.ts"

const host = (answers: Record<string, string>): Probe => (command) => answers[command]

describe("host requirements of jobs without an image", () => {
  it("accepts a host whose python3 has the requested version", () => {
    expect(unmetHostRequirements({ python: "3.11" }, host({ python3: "Python 3.11.7\n" }))).toBeUndefined()
    expect(unmetHostRequirements({ python: "3.10" }, host({ "python3.10": "Python 3.10.2", python3: "Python 3.12.1" }))).toBeUndefined()
    expect(unmetHostRequirements({}, host({}))).toBeUndefined()
  })

  it("refuses a job whose Python version the host lacks, naming what it has", () => {
    const why = unmetHostRequirements({ python: "3.9" }, host({ python3: "Python 3.11.7", python: "Python 2.7.18" }))
    expect(why).toBe(
      "python 3.9 was requested but this host has python3 is 3.11, python is 2.7: install Python 3.9 on the host, or set an image that has it"
    )
    expect(unmetHostRequirements({ python: "3.12" }, host({}))).toMatch(/this host has no Python/)
  })

  it("refuses nvcc on a host without the CUDA compiler, and accepts it where nvcc runs", () => {
    expect(unmetHostRequirements({ nvcc: true }, host({}))).toMatch(/no CUDA compiler/)
    expect(unmetHostRequirements({ nvcc: true }, host({ nvcc: "Cuda compilation tools, release 13.0" }))).toBeUndefined()
  })
})
