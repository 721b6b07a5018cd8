// The manifests packages are published with (scripts/packages.ts), for every workspace package
// as it stands and for shapes the build cannot serve. Fast: no build, no npm.
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { jsrConfig, publishManifest, workspacePackages, type Manifest } from "../../scripts/packages.ts"

const shape: Manifest = {
  name: "@acme/example",
  version: "1.2.3",
  license: "MIT",
  exports: { ".": "./src/index.ts", "./testing": "./src/testing/index.ts", "./package.json": "./package.json" },
  files: ["src", "README.md"],
  scripts: { test: "vitest" },
  devDependencies: { vitest: "*" }
}

describe("publishManifest", () => {
  it("points every source export at dist/ with its declarations first, and ships dist/", () => {
    const published = publishManifest(shape)
    expect(published.exports).toEqual({
      ".": { types: "./dist/index.d.ts", default: "./dist/index.js" },
      "./testing": { types: "./dist/testing/index.d.ts", default: "./dist/testing/index.js" },
      "./package.json": "./package.json"
    })
    expect(Object.keys((published.exports as any)["."])).toEqual(["types", "default"])
    expect(published.types).toBe("./dist/index.d.ts")
    expect(published.files).toEqual(["src", "README.md", "dist"])
    expect(published).not.toHaveProperty("scripts")
    expect(published).not.toHaveProperty("devDependencies")
  })

  it("refuses shapes it cannot build, naming the package and the field", () => {
    expect(() => publishManifest({ ...shape, exports: undefined })).toThrow(`@acme/example package.json: "exports" is required`)
    expect(() => publishManifest({ ...shape, exports: { ".": "./lib/index.ts" } })).toThrow(
      `@acme/example package.json exports["."]: "./lib/index.ts" is TypeScript outside ./src/, which the build does not compile`
    )
    expect(() => publishManifest({ ...shape, files: ["dist"] })).toThrow(`@acme/example package.json: "files" must list "src"`)
    expect(() => publishManifest({ ...shape, version: undefined as unknown as string })).toThrow(`"name" and "version" are required`)
  })

  it("serves every workspace package: each export's files exist as sources", () => {
    const packages = workspacePackages()
    expect(packages.map((p) => p.manifest.name)).toEqual(expect.arrayContaining(["@dstack-ts/core", "@dstack-ts/cli"]))
    for (const pkg of packages) {
      const published = publishManifest(pkg.manifest)
      for (const [key, source] of Object.entries(jsrConfig(pkg.manifest).exports)) {
        expect(fs.existsSync(path.join(pkg.dir, source)), `${pkg.manifest.name} ${key}: ${source}`).toBe(true)
        // Conditions nest ({ browser: { types, default }, default: { types, default } }): follow `default`.
        let target = (published.exports as any)[key]
        while (typeof target === "object" && target !== null) target = target.default
        expect(target, `${pkg.manifest.name} ${key}`).toMatch(/^\.\/dist\/.+\.js$/)
      }
    }
  })
})

describe("jsrConfig", () => {
  it("gives JSR the name, version, license and source exports, and publishes what npm ships less dist/", () => {
    expect(jsrConfig({ ...shape, files: ["src", "dist", "README.md"] })).toEqual({
      name: "@acme/example",
      version: "1.2.3",
      license: "MIT",
      exports: { ".": "./src/index.ts", "./testing": "./src/testing/index.ts" },
      publish: { include: ["src", "README.md", "package.json"] }
    })
  })
})
