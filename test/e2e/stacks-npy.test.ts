// A third-party codec plugin used as a third party would: examples/codec-npy (NumPy .npy) runs
// core's codec conformance suite, then is installed in a project's node_modules only, and the
// `dstack` CLI run in that project pushes .npy files with it (by extension and, under another
// name, by the magic number), pulls them back byte for byte against a real server, stores an
// unknown file as bytes saying so, and refuses a missing or conflicting plugin naming both.
import { execFile } from "node:child_process"
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { pathToFileURL } from "node:url"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { testCodec } from "../../core/src/testing/index.ts"
import { Stacks } from "@dstack-ts/client"
import { type NdArray, ndarray, npy, writeNpy } from "../../examples/codec-npy/src/index.ts"
import { startStackServer, type StackServer } from "../browser/stackServer.ts"

const ROOT = resolve(import.meta.dirname, "../..")
const EXAMPLE = join(ROOT, "examples/codec-npy")

/**
 * A .npy file written here from the format's description, not by the codec: version 1.0,
 * `<f8`, C order, shape (2, 3), the header padded with spaces to a multiple of 64 bytes and ended by "\n".
 */
const handWrittenNpy = (): { bytes: Uint8Array; values: Float64Array } => {
  const values = Float64Array.of(1.5, -2, 3.25, 0, 1e-3, 42)
  let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"
  header = header.padEnd(Math.ceil((10 + header.length + 1) / 64) * 64 - 10 - 1, " ") + "\n"
  const bytes = new Uint8Array(10 + header.length + values.byteLength)
  bytes.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 0xff, header.length >> 8])
  for (let i = 0; i < header.length; i++) bytes[10 + i] = header.charCodeAt(i)
  const data = new DataView(bytes.buffer, 10 + header.length)
  values.forEach((v, i) => data.setFloat64(i * 8, v, true))
  return { bytes, values }
}

const npyBytes = handWrittenNpy().bytes
const HEADER_END = 128 // 10 bytes of magic, version and length, then the 118-byte padded dict
const npyArray: NdArray = {
  _tag: "NdArray",
  dtype: "<f8",
  shape: [2, 3],
  fortranOrder: false,
  data: npyBytes.slice(HEADER_END)
}

testCodec("examples/codec-npy", npy, {
  accepted: [
    { name: "a hand-written v1.0 .npy file", value: npyBytes, decoded: npyArray },
    { name: "an NdArray (written as v1.0)", value: ndarray(Int32Array.of(1, 2, 3, 4, 5, 6), [3, 2]) },
    { name: "a 0-d array", value: ndarray(Float32Array.of(7), []) },
    { name: "an empty array", value: ndarray(new Uint16Array(0), [0, 4]) },
    { name: "unicode strings", value: { _tag: "NdArray", dtype: "<U2", shape: [1], fortranOrder: true, data: new Uint8Array(8) } as NdArray }
  ],
  rejected: [
    { name: "bytes without the magic", value: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]) },
    { name: "a .npy file cut short", value: npyBytes.subarray(0, 70) },
    { name: "an NdArray whose data does not fit its shape", value: { ...npyArray, shape: [4, 4] } },
    { name: "an object array", value: { ...npyArray, dtype: "|O" } },
    { name: "a string", value: "[1, 2]" }
  ],
  corrupt: [
    { name: "no magic", body: new Uint8Array(80) },
    { name: "truncated data", body: npyBytes.subarray(0, npyBytes.length - 3) },
    { name: "an unknown version", body: Uint8Array.from([...npyBytes.subarray(0, 6), 9, 0, ...npyBytes.subarray(8)]) },
    { name: "a header that is not a dict", body: Uint8Array.from([...npyBytes.subarray(0, 10), ...new TextEncoder().encode("x".repeat(53) + "\n")]) }
  ]
})

describe("examples/codec-npy's own format code", () => {
  it("writes what it reads and what NumPy's format says", () => {
    expect(writeNpy(npyArray)).toEqual(npyBytes)
    expect(ndarray(Float64Array.of(1.5, -2, 3.25, 0, 1e-3, 42), [2, 3])).toEqual(npyArray)
    expect(() => ndarray(Float64Array.of(1, 2, 3), [2, 2])).toThrow(/needs 32 bytes/)
  })
})

describe("dstack push and pull with a codec plugin installed in the project", () => {
  const exec = promisify(execFile)
  let s: StackServer
  let alice: string
  let project: string

  /**
   * Runs the dstack CLI in `cwd` (the project by default): the workspace's bin, not the built one
   * of test/support/cli.ts, because the plugin is installed as its TypeScript sources, which only
   * a command run through tsx (or Deno) can import — an installed command needs a built plugin.
   */
  const cli = (args: Array<string>, cwd = project) =>
    exec(process.execPath, [join(ROOT, "cli/bin/dstack.mjs"), ...args], {
      cwd,
      env: { ...process.env, DSTACK_SERVER_URL: s.url, DSTACK_TOKEN: alice, DSTACK_PROJECT: "main", HOME: tmpdir() },
      timeout: 60_000
    })
  const rejection = async (p: Promise<unknown>): Promise<any> => {
    try {
      await p
    } catch (e) {
      return e
    }
    throw new Error("expected a rejection")
  }

  /** A project folder: package.json and node_modules/@acme/dstack-codec-npy → the example. */
  const makeProject = async (packageJson: object = { name: "npy-project", private: true }) => {
    const dir = await mkdtemp(join(tmpdir(), "dstack-npy-project-"))
    await writeFile(join(dir, "package.json"), JSON.stringify(packageJson))
    await mkdir(join(dir, "node_modules/@acme"), { recursive: true })
    await symlink(EXAMPLE, join(dir, "node_modules/@acme/dstack-codec-npy"), "dir")
    return dir
  }
  const projects: Array<string> = []

  beforeAll(async () => {
    s = await startStackServer()
    alice = await s.createUser("alice")
    project = await makeProject()
    projects.push(project)
  }, 60_000)
  afterAll(async () => {
    await s?.close()
    for (const dir of projects) await rm(dir, { recursive: true, force: true })
  })

  it("pushes a .npy file with the plugin's codec and pulls it back byte for byte", async () => {
    await writeFile(join(project, "weights.npy"), npyBytes)
    const pushed = await cli(["push", "arrays/weights", "weights.npy", "--message", "first"])
    expect(pushed.stdout).toContain("as ndarray/npy")
    expect(pushed.stderr).not.toContain("storing it as bytes")

    const stacks = Stacks.make({ url: s.url, token: alice, codecs: [npy] })
    const info = await stacks.get("arrays/weights")
    expect(info.head_frame?.attachments[0]).toMatchObject({
      content_type: "application/x-npy",
      application: "ndarray",
      metadata: { dtype: "<f8", shape: [2, 3], fortran_order: false, npy_version: "1.0", plugin: "@acme/dstack-codec-npy" },
      size: npyBytes.length
    })
    expect(await stacks.pull("arrays/weights")).toEqual(npyArray)

    // Without -o the file is named by the codec's declared extension.
    await cli(["pull", "arrays/weights"])
    expect(new Uint8Array(await readFile(join(project, "weights.npy")))).toEqual(npyBytes)
    await cli(["pull", "arrays/weights", "-o", "back.npy"])
    expect(new Uint8Array(await readFile(join(project, "back.npy")))).toEqual(npyBytes)
  }, 120_000)

  it("recognises .npy bytes by their magic number under a name no codec declares; an unknown file is stored as bytes, saying so", async () => {
    await writeFile(join(project, "weights.bin"), npyBytes)
    const byMagic = await cli(["push", "arrays/by-magic", "weights.bin"])
    expect(byMagic.stdout).toContain("as ndarray/npy")
    const stacks = Stacks.make({ url: s.url, token: alice })
    expect((await stacks.get("arrays/by-magic")).head_frame?.attachments[0].content_type).toBe("application/x-npy")

    await writeFile(join(project, "notes.xyz"), new Uint8Array([0, 1, 2, 3, 250]))
    const unknown = await cli(["push", "arrays/unknown", "notes.xyz"])
    expect(unknown.stderr).toContain("No installed codec recognises notes.xyz: storing it as bytes")
    expect(unknown.stdout).toContain("as bytes/octet-stream")
    expect((await stacks.get("arrays/unknown")).head_frame?.attachments[0].content_type).toBe("application/octet-stream")

    // A .npy name on bytes that are not one: the codec declines and the CLI says which.
    await writeFile(join(project, "fake.npy"), new Uint8Array([1, 2, 3]))
    const fake = await cli(["push", "arrays/fake", "fake.npy"])
    expect(fake.stderr).toContain("fake.npy was claimed by ndarray/npy (by extension) but none could read it: storing it as bytes")

    // The same .npy file pushed where the plugin is not installed is stored as bytes.
    const bare = await mkdtemp(join(tmpdir(), "dstack-npy-bare-"))
    projects.push(bare)
    await writeFile(join(bare, "package.json"), "{}")
    const without = await cli(["push", "arrays/without", join(project, "weights.npy")], bare)
    expect(without.stderr).toContain("No installed codec recognises")
  }, 120_000)

  it("a plugin the project lists but has not installed, and two plugins contributing one codec, are errors naming the packages and versions", async () => {
    const missing = await makeProject({ name: "p", private: true, "dstack-ts": { plugins: ["@acme/dstack-codec-npy", "@acme/dstack-codec-hdf5"] } })
    projects.push(missing)
    await writeFile(join(missing, "a.npy"), npyBytes)
    const e1 = await rejection(cli(["push", "arrays/missing", "a.npy"], missing))
    expect(e1.code).toBe(1)
    expect(e1.stderr).toContain("@acme/dstack-codec-hdf5 is listed in \"dstack-ts.plugins\" but is not installed (npm install @acme/dstack-codec-hdf5)")

    // Another package contributing the codec id "ndarray/npy".
    const conflict = await makeProject()
    projects.push(conflict)
    const copy = join(conflict, "node_modules/@other/npy-copy")
    await mkdir(copy, { recursive: true })
    await writeFile(join(copy, "package.json"), JSON.stringify({ name: "@other/npy-copy", version: "2.0.0", type: "module", "dstack-ts": { plugin: true }, exports: "./index.mjs" }))
    // Plain JavaScript: Deno does not strip types from files under node_modules.
    await writeFile(
      join(copy, "index.mjs"),
      `import { definePlugin } from ${JSON.stringify(pathToFileURL(join(ROOT, "core/src/index.ts")).href)}
import { npy } from ${JSON.stringify(pathToFileURL(join(EXAMPLE, "src/index.ts")).href)}
export default definePlugin({ name: "@other/npy-copy", version: "2.0.0", core: "^0.1.0", codecs: [npy] })
`
    )
    await writeFile(join(conflict, "a.npy"), npyBytes)
    const e2 = await rejection(cli(["push", "arrays/conflict", "a.npy"], conflict))
    expect(e2.code).toBe(1)
    expect(e2.stderr).toContain('codec "ndarray/npy" is contributed by both @acme/dstack-codec-npy@0.1.0 and @other/npy-copy@2.0.0')
  }, 120_000)
})
