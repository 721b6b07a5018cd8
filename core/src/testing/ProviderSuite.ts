/**
 * Conformance suites for the Provider and Repo ports: a provider makes well-formed jobs from
 * valid parameters and refuses invalid ones with a clear `Invalid`; a repo packs to a stable
 * hash and materializes what it packed.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as Provider from "../ports/Provider.ts"
import * as Repo from "../ports/Repo.ts"

export interface ProviderSamples {
  /** Parameters the provider accepts. */
  readonly valid: ReadonlyArray<unknown>
  /** Parameters it must refuse, each with a fragment its message must contain (a field name). */
  readonly invalid: ReadonlyArray<readonly [unknown, string]>
}

/**
 * @example
 * testProvider(curl, { valid: [{ url: "u", output: "o" }], invalid: [[{ url: "u" }, "output"]] })
 */
export const testProvider = (provider: Provider.Provider, samples: ProviderSamples): void => {
  const context = { workflowName: "conformance" }
  describe(`Provider conformance: ${provider.name}`, () => {
    it.effect("makes well-formed jobs from valid parameters", () =>
      Effect.gen(function*() {
        for (const parameters of samples.valid) {
          const jobs = yield* provider.createJobs(parameters, context)
          expect(jobs.length).toBeGreaterThan(0)
          // Every job survives an encode/decode round trip through the wire schema.
          for (const job of jobs) {
            const wire = Schema.encodeSync(Provider.ProviderJob)(job)
            expect(Schema.decodeUnknownSync(Provider.ProviderJob)(wire)).toEqual(job)
          }
        }
      }))

    it.effect("refuses invalid parameters with Invalid, naming the field", () =>
      Effect.gen(function*() {
        for (const [parameters, fragment] of samples.invalid) {
          const error = yield* Effect.flip(provider.createJobs(parameters, context))
          expect(error._tag).toBe("ProviderError")
          expect(error.reason).toBe("Invalid")
          expect(error.message).toContain(fragment)
        }
      }))
  })
}

/**
 * @example
 * testRepo(Repo.virtual, { type: "virtual", files: { "a.txt": "x" } }, "/tmp/empty-dir")
 */
export const testRepo = (repo: Repo.Repo, source: Repo.RepoSource, emptyDir: () => string): void => {
  describe(`Repo conformance: ${repo.type}`, () => {
    it.effect("packs to a stable sha256 hash that matches the archive", () =>
      Effect.gen(function*() {
        const a = yield* repo.pack(source)
        const b = yield* repo.pack(source)
        expect(a.codeHash).toMatch(/^[0-9a-f]{64}$/)
        expect(b.codeHash).toBe(a.codeHash)
        const digest = new Uint8Array(
          yield* Effect.promise(() => globalThis.crypto.subtle.digest("SHA-256", a.archive as Uint8Array<ArrayBuffer>))
        )
        expect(Array.from(digest, (x) => x.toString(16).padStart(2, "0")).join("")).toBe(a.codeHash)
        expect(a.repoData.repoType).toBe(repo.type)
      }))

    it.effect("materializes what it packed", () =>
      Effect.gen(function*() {
        const packed = yield* repo.pack(source)
        yield* repo.materialize({ repoData: packed.repoData, archive: packed.archive }, emptyDir())
      }))

    it.effect("refuses a source of another type with Invalid", () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(repo.pack({ type: `${repo.type}-other` }))
        expect(error.reason).toBe("Invalid")
      }))
  })
}
