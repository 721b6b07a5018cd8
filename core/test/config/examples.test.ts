// Every examples/**/*.dstack.yml must validate, so that no example rots, and every
// example uses only keys this build carries out.
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

  it.effect("every example is accepted at plan time", () =>
    Effect.gen(function* () {
      const files = yield* findConfigurationFiles(examples, { recursive: true })
      for (const file of files) {
        const config = yield* loadConfiguration(file)
        expect(unsupportedKeys(config), file).toEqual([])
        expect((yield* loadConfiguration(file, { supportedOnly: true })).type).toBe(config.type)
      }
    })
  )
})
