// Every examples/**/*.dstack.yml must validate, so that no example rots, and every one but the
// SSH fleet (which says it needs a later release) uses only keys this build carries out.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { fileURLToPath } from "node:url"
import { findConfigurationFiles, loadConfiguration, unsupportedKeys } from "../../src/config/index.ts"
import { AnyConfiguration } from "../../src/domain/index.ts"

const examples = fileURLToPath(new URL("../../../examples", import.meta.url))

describe("examples", () => {
  it.effect("there is one example of each configuration type, and every example validates", () =>
    Effect.gen(function* () {
      const files = yield* findConfigurationFiles(examples, { recursive: true })
      expect(files.length).toBeGreaterThanOrEqual(5)
      const types = new Set<string>()
      for (const file of files) {
        const config = yield* loadConfiguration(file)
        types.add(config.type)
        const encoded = Schema.encodeSync(AnyConfiguration)(config)
        expect(Schema.decodeUnknownSync(AnyConfiguration)(encoded)).toEqual(config)
      }
      expect([...types].sort()).toEqual(["dev-environment", "fleet", "service", "task"])
    })
  )

  it.effect("the hello task runs without an image on small resources", () =>
    Effect.gen(function* () {
      const hello = yield* loadConfiguration(`${examples}/hello/.dstack.yml`)
      expect(hello.type).toBe("task")
      if (hello.type !== "task") return
      expect(hello.image).toBeUndefined()
      expect(hello.commands?.[0]).toBe('echo "Hello from dstack-ts"')
      expect(hello.resources.cpu.count).toEqual({ min: 1 })
      expect(hello.resources.memory).toEqual({ min: 1 })
    })
  )

  it.effect("every example but examples/fleet-ssh is accepted at plan time; the fleet is refused by its type", () =>
    Effect.gen(function* () {
      const files = yield* findConfigurationFiles(examples, { recursive: true })
      for (const file of files) {
        const config = yield* loadConfiguration(file)
        const refused = unsupportedKeys(config)
        if (file.endsWith("fleet-ssh/.dstack.yml")) {
          expect(refused.map((k) => k.path)).toEqual([["type"]])
          expect(refused[0].message).toMatch(/^`type: fleet` is not supported yet/)
          const error = yield* Effect.flip(loadConfiguration(file, { supportedOnly: true }))
          expect(error.issues.map((i) => [i.line, i.path])).toEqual([[5, "type"]])
        } else {
          expect(refused, file).toEqual([])
          expect((yield* loadConfiguration(file, { supportedOnly: true })).type).toBe(config.type)
        }
      }
    })
  )
})
