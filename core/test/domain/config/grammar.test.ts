// The shorthand grammars of configurations: valid and invalid inputs, with the error text.
import { describe, expect, it } from "@effect/vitest"
import { Either, ParseResult, Schema } from "effect"
import {
  BackendType,
  CPUSpec,
  DiskSpec,
  Duration,
  DurationOrOff,
  Env,
  GPUSpec,
  IntRange,
  Memory,
  MemoryRange,
  PortMapping,
  resolveEnv,
  RetryPolicy,
  VolumeMount
} from "../../../src/domain/index.ts"

const decode = <A, I>(schema: Schema.Schema<A, I>) => (u: unknown) =>
  Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "error" })(u)

const ok = <A, I>(schema: Schema.Schema<A, I>, input: unknown): A => {
  const r = decode(schema)(input)
  if (Either.isLeft(r)) throw new Error(`expected ${JSON.stringify(input)} to decode: ${r.left.message}`)
  return r.right
}

const fails = <A, I>(schema: Schema.Schema<A, I>, input: unknown): string => {
  const r = decode(schema)(input)
  if (Either.isRight(r)) throw new Error(`expected ${JSON.stringify(input)} to fail, got ${JSON.stringify(r.right)}`)
  return ParseResult.ArrayFormatter.formatErrorSync(r.left)
    .map((i) => `${i.path.join(".")}: ${i.message}`)
    .join("\n")
}

const roundTrips = <A, I>(schema: Schema.Schema<A, I>, input: unknown) => {
  const a = ok(schema, input)
  const encoded = Schema.encodeSync(schema)(a)
  expect(ok(schema, encoded)).toEqual(a)
  return encoded
}

describe("Duration", () => {
  it.each([
    [0, 0],
    [90, 90],
    ["90", 90],
    ["90s", 90],
    ["5m", 300],
    ["2h", 7200],
    ["1d", 86400],
    ["1w", 604800]
  ])("%j → %d seconds", (input, seconds) => {
    expect(ok(Duration, input)).toBe(seconds)
  })

  it.each([["2x"], ["-5m"], ["h"], [true], [null]])("rejects %j", (input) => {
    expect(fails(Duration, input)).toContain("expected a duration such as 90s, 5m, 2h, 1d or 1w")
  })

  it.each([[-1], [1.5]])("rejects %j seconds", (input) => {
    expect(fails(Duration, input)).toBe(`: expected a whole, non-negative number of seconds, got ${input}`)
  })

  it("encodes with the largest exact unit", () => {
    expect(Schema.encodeSync(Duration)(7200)).toBe("2h")
    expect(Schema.encodeSync(Duration)(90)).toBe("90s")
    expect(Schema.encodeSync(Duration)(0)).toBe("0s")
    expect(Schema.encodeSync(Duration)(1209600)).toBe("2w")
  })

  it("off is accepted only where allowed", () => {
    expect(ok(DurationOrOff, "off")).toBe("off")
    expect(ok(DurationOrOff, false)).toBe("off")
    expect(ok(DurationOrOff, "1h")).toBe(3600)
    expect(fails(Duration, "off")).toContain("got \"off\"")
    expect(fails(DurationOrOff, "never")).toContain("or off, got \"never\"")
    expect(roundTrips(DurationOrOff, "off")).toBe("off")
  })
})

describe("Memory and ranges", () => {
  it.each([
    ["8GB", 8],
    ["8gb", 8],
    ["512MB", 0.5],
    ["1TB", 1024],
    [16, 16],
    ["1.5GB", 1.5]
  ])("memory %j → %d GB", (input, gb) => {
    expect(ok(Memory, input)).toBe(gb)
  })

  it("rejects bad sizes", () => {
    expect(fails(Memory, "8XB")).toContain("expected a size such as 512MB, 8GB or 1TB")
    expect(fails(Memory, -1)).toContain("non-negative")
  })

  it.each([
    [4, { min: 4, max: 4 }],
    ["4", { min: 4, max: 4 }],
    ["1..4", { min: 1, max: 4 }],
    ["2..", { min: 2 }],
    ["..8", { max: 8 }],
    [{ min: 1, max: 3 }, { min: 1, max: 3 }],
    [{ min: "2" }, { min: 2 }]
  ])("int range %j", (input, range) => {
    expect(ok(IntRange, input)).toEqual(range)
  })

  it.each([
    ["a..b", "expected a number or a range such as 2, 1..4, 2.. or ..8, got \"a..b\""],
    ["..", "give at least one bound"],
    ["4..2", "the lower bound is above the upper bound"],
    ["1..2..3", "got \"1..2..3\""],
    [1.5, "got 1.5"],
    [[1, 2], "got [1,2]"]
  ])("rejects int range %j", (input, text) => {
    expect(fails(IntRange, input)).toContain(text)
  })

  it("rejects an object range with min above max, naming min", () => {
    expect(fails(IntRange, { min: 5, max: 2 })).toBe("min: min (5) is greater than max (2)")
    expect(fails(IntRange, { min: 1, mx: 2 })).toContain("mx: is unexpected")
  })

  it("memory ranges encode to the object form with units", () => {
    expect(ok(MemoryRange, "24GB..80GB")).toEqual({ min: 24, max: 80 })
    expect(ok(MemoryRange, "512MB..")).toEqual({ min: 0.5 })
    expect(roundTrips(MemoryRange, "8GB..")).toEqual({ min: "8GB" })
    expect(roundTrips(MemoryRange, "..1TB")).toEqual({ max: "1TB" })
  })
})

describe("CPU", () => {
  it.each([
    [4, { count: { min: 4, max: 4 } }],
    ["2..", { count: { min: 2 } }],
    ["arm:8", { arch: "arm", count: { min: 8, max: 8 } }],
    ["x86:4..", { arch: "x86", count: { min: 4 } }],
    ["8:aarch64", { arch: "arm", count: { min: 8, max: 8 } }],
    [{ arch: "arm", count: "2..4" }, { arch: "arm", count: { min: 2, max: 4 } }],
    [{ arch: "x86" }, { arch: "x86", count: { min: 2 } }]
  ])("%j", (input, spec) => {
    expect(ok(CPUSpec, input)).toEqual(spec)
    roundTrips(CPUSpec, input)
  })

  it.each([
    ["risc:4", "expected a CPU count or range, optionally with an architecture"],
    ["arm:x86:2", "the architecture is given twice"],
    [true, "got true"],
    [{ arch: "sparc" }, "arch: expected a CPU architecture x86 or arm, got \"sparc\""]
  ])("rejects %j", (input, text) => {
    expect(fails(CPUSpec, input)).toContain(text)
  })
})

describe("GPU", () => {
  it.each([
    ["A100", { name: ["A100"], count: { min: 1, max: 1 } }],
    ["A100:80GB:2", { name: ["A100"], memory: { min: 80, max: 80 }, count: { min: 2, max: 2 } }],
    ["H100,A100:1..4", { name: ["H100", "A100"], count: { min: 1, max: 4 } }],
    ["amd:MI300X", { vendor: "amd", name: ["MI300X"], count: { min: 1, max: 1 } }],
    ["tpu:v5litepod-8", { vendor: "google", name: ["v5litepod-8"], count: { min: 1, max: 1 } }],
    ["24GB..80GB", { memory: { min: 24, max: 80 }, count: { min: 1, max: 1 } }],
    ["nvidia:24GB..:2..", { vendor: "nvidia", memory: { min: 24 }, count: { min: 2 } }],
    [2, { count: { min: 2, max: 2 } }],
    ["0", { count: { min: 0, max: 0 } }],
    [
      { name: "A100", count: 2, memory: "40GB..", total_memory: "80GB..", compute_capability: 8 },
      { name: ["A100"], count: { min: 2, max: 2 }, memory: { min: 40 }, totalMemory: { min: 80 }, computeCapability: "8.0" }
    ],
    [
      { vendor: "tpu", name: ["v2-8", "v3-8"], compute_capability: "7.5" },
      { vendor: "google", name: ["v2-8", "v3-8"], count: { min: 1, max: 1 }, computeCapability: "7.5" }
    ]
  ])("%j", (input, spec) => {
    expect(ok(GPUSpec, input)).toEqual(spec)
    roundTrips(GPUSpec, input)
  })

  it.each([
    ["A100:2:4", "the count is given twice"],
    ["nvidia:amd", "the vendor is given twice"],
    ["A100:80GB:40GB", "the memory is given twice"],
    ["A100::2", "(empty part)"],
    ["A100:80GB:2x", "cannot read \"2x\""],
    ["A 100", "cannot read \"A 100\""],
    [{ name: "A100", vendr: "nvidia" }, "vendr: is unexpected"],
    [{ vendor: "ibm" }, "vendor: expected a GPU vendor nvidia, amd, google (or tpu) or intel, got \"ibm\""],
    [{ compute_capability: "high" }, "compute_capability: expected a compute capability such as 7.5"]
  ])("rejects %j", (input, text) => {
    expect(fails(GPUSpec, input)).toContain(text)
  })
})

describe("Disk", () => {
  it("takes a size range or {size}", () => {
    expect(ok(DiskSpec, "100GB..")).toEqual({ size: { min: 100 } })
    expect(ok(DiskSpec, 200)).toEqual({ size: { min: 200, max: 200 } })
    expect(ok(DiskSpec, { size: "50GB..200GB" })).toEqual({ size: { min: 50, max: 200 } })
    expect(roundTrips(DiskSpec, "1TB..")).toEqual({ size: { min: "1TB" } })
    expect(fails(DiskSpec, "lots")).toContain("expected a disk size or range such as 100GB")
    expect(fails(DiskSpec, {})).toContain("size: is missing")
  })
})

describe("Env", () => {
  it("takes a list or a map and keeps bare names as null", () => {
    expect(ok(Env, ["A=1", "B", "C=x=y", "D="])).toEqual({ A: "1", B: null, C: "x=y", D: "" })
    expect(ok(Env, { A: "1", B: 2, C: true, D: null })).toEqual({ A: "1", B: "2", C: "true", D: null })
    expect(roundTrips(Env, ["A=1", "B"])).toEqual({ A: "1", B: null })
  })

  it("names the bad entry", () => {
    expect(fails(Env, ["A=1", "1BAD=2", 3])).toBe(
      "1: expected NAME=value or NAME with a valid variable name, got \"1BAD=2\"\n2: expected NAME=value or NAME, got 3"
    )
    expect(fails(Env, ["A=1", "A=2"])).toBe("1: variable A is set twice")
    expect(fails(Env, { A: { nested: 1 } })).toBe("A: expected a string value, got {\"nested\":1}")
    expect(fails(Env, "A=1")).toContain("expected a map of variables or a list of NAME=value")
  })

  it("resolves bare names from the client environment", () => {
    expect(resolveEnv({ A: "1", B: null }, { B: "2" })).toEqual(Either.right({ A: "1", B: "2" }))
    expect(resolveEnv({ A: null, B: null }, {})).toEqual(Either.left(["A", "B"]))
  })
})

describe("PortMapping", () => {
  it.each([
    [80, { localPort: 80, containerPort: 80 }],
    ["80", { localPort: 80, containerPort: 80 }],
    ["8080:80", { localPort: 8080, containerPort: 80 }],
    ["*:80", { containerPort: 80 }],
    [{ container_port: 80 }, { containerPort: 80 }],
    [{ local_port: 3000, container_port: 80 }, { localPort: 3000, containerPort: 80 }]
  ])("%j", (input, mapping) => {
    expect(ok(PortMapping, input)).toEqual(mapping)
    roundTrips(PortMapping, input)
  })

  it.each([
    [0, "ports go from 1 to 65535"],
    ["70000", "got \"70000\""],
    ["a:80", "got \"a:80\""],
    ["1:2:3", "got \"1:2:3\""],
    [{ container_port: 0 }, "container_port: expected a port number from 1 to 65535, got 0"]
  ])("rejects %j", (input, text) => {
    expect(fails(PortMapping, input)).toContain(text)
  })
})

describe("RetryPolicy", () => {
  it("true retries on every event for an hour; false never", () => {
    expect(ok(RetryPolicy, true)).toEqual({ onEvents: ["no-capacity", "interruption", "error"], duration: 3600 })
    expect(ok(RetryPolicy, false)).toEqual({ onEvents: [], duration: 3600 })
  })

  it("takes {on_events, duration} with defaults", () => {
    expect(ok(RetryPolicy, { on_events: ["no-capacity"], duration: "2h" })).toEqual({ onEvents: ["no-capacity"], duration: 7200 })
    expect(ok(RetryPolicy, { duration: "1d" })).toEqual({ onEvents: ["no-capacity", "interruption", "error"], duration: 86400 })
    expect(roundTrips(RetryPolicy, { on_events: ["error"] })).toEqual({ on_events: ["error"], duration: "1h" })
  })

  it("rejects unknown events and forms", () => {
    expect(fails(RetryPolicy, { on_events: ["crash"] })).toContain("on_events.0: expected one of no-capacity, interruption, error, got \"crash\"")
    expect(fails(RetryPolicy, "yes")).toContain("expected true, false or {on_events, duration}, got \"yes\"")
  })
})

describe("BackendType and volumes", () => {
  it("reads ssh as remote and rejects unknown backends", () => {
    expect(ok(BackendType, "ssh")).toBe("remote")
    expect(ok(BackendType, "AWS")).toBe("aws")
    expect(ok(BackendType, "local")).toBe("local")
    // a plugin's backend is any lowercase name; the server checks it exists when planning
    expect(ok(BackendType, "fake-cloud")).toBe("fake-cloud")
    expect(fails(BackendType, "not a name!")).toContain("expected a backend type, one of aws, azure, cudo")
    expect(fails(BackendType, 42)).toContain("or the name of a plugin's backend")
  })

  it("reads volume and instance mounts", () => {
    expect(ok(VolumeMount, "data:/data")).toEqual({ name: "data", path: "/data" })
    expect(ok(VolumeMount, "/mnt/cache:/cache")).toEqual({ instancePath: "/mnt/cache", path: "/cache" })
    expect(ok(VolumeMount, { instance_path: "~/x", path: "/x" })).toEqual({ instancePath: "~/x", path: "/x" })
    expect(roundTrips(VolumeMount, "/a:/b")).toEqual({ instance_path: "/a", path: "/b" })
    expect(fails(VolumeMount, "data:relative")).toContain("path: expected an absolute path (starting with /), got \"relative\"")
    expect(fails(VolumeMount, "nocolon")).toContain("expected a mount such as my-volume:/data")
  })
})
