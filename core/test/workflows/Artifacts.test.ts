// The runner's side of artifacts: which paths are allowed, the files a folder list gives, the
// manifest's sizes and SHA-256, and a packed archive extracting to the same bytes.
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { artifactManifest, artifactPathProblem, jobDirectory, listArtifactFiles, packArtifacts } from "../../src/runner/Artifacts.ts"
import { extractArtifacts } from "../../src/workflows/Artifacts.ts"

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "artifacts-test-"))

describe("artifacts on the runner", () => {
  it("allows only paths inside the working directory", () => {
    expect(artifactPathProblem("out")).toBeUndefined()
    expect(artifactPathProblem("a/../b")).toBeUndefined()
    expect(artifactPathProblem("../up")).toBe("leaves the working directory")
    expect(artifactPathProblem("a/../../up")).toBe("leaves the working directory")
    expect(artifactPathProblem("/abs")).toMatch(/is absolute/)
    expect(artifactPathProblem(" ")).toBe("is empty")
    expect(jobDirectory("/r", "sub")).toBe("/r/sub")
    expect(jobDirectory("/r", "/abs")).toBe("/r")
    expect(jobDirectory("/r", undefined)).toBe("/r")
  })

  it("lists the files of folders and single files, names a missing one, and packs them to the same bytes", async () => {
    const dir = tmp()
    fs.mkdirSync(path.join(dir, "out/sub"), { recursive: true })
    fs.writeFileSync(path.join(dir, "out/a.txt"), "a")
    fs.writeFileSync(path.join(dir, "out/sub/b.bin"), Buffer.alloc(100_000, 7))
    fs.writeFileSync(path.join(dir, "single.txt"), "s")
    expect(listArtifactFiles(dir, ["out", "single.txt"])).toEqual(["out/a.txt", "out/sub/b.bin", "single.txt"])
    expect(() => listArtifactFiles(dir, ["missing"])).toThrow(/artifact "missing" does not exist in the working directory/)
    const manifest = await Effect.runPromise(artifactManifest(dir, ["out"]))
    expect(manifest).toEqual([
      { path: "out/a.txt", size: 1, sha256: createHash("sha256").update("a").digest("hex") },
      { path: "out/sub/b.bin", size: 100_000, sha256: createHash("sha256").update(Buffer.alloc(100_000, 7)).digest("hex") }
    ])
    const target = tmp()
    await Effect.runPromise(Effect.flatMap(packArtifacts(dir, ["out"]), (stream) => extractArtifacts(stream, target)))
    expect(fs.readFileSync(path.join(target, "out/sub/b.bin")).equals(Buffer.alloc(100_000, 7))).toBe(true)
    expect(fs.existsSync(path.join(target, "single.txt"))).toBe(false)
  })
})
