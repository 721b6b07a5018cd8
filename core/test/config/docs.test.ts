// docs/configuration.md is generated from the schemas: it must be up to date and cover every key.
import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { renderConfigurationDocs, renderFleetDocs } from "../../../scripts/gen-config-docs.ts"

describe("configuration reference", () => {
  const rendered = renderConfigurationDocs()

  it("docs/configuration.md matches the schemas (run: npx tsx scripts/gen-config-docs.ts)", () => {
    const file = fileURLToPath(new URL("../../../docs/configuration.md", import.meta.url))
    expect(readFileSync(file, "utf8")).toBe(rendered)
  })

  it("docs/fleets.md matches the schemas (run: npx tsx scripts/gen-config-docs.ts)", () => {
    const file = fileURLToPath(new URL("../../../docs/fleets.md", import.meta.url))
    expect(readFileSync(file, "utf8")).toBe(renderFleetDocs())
  })

  it("documents every key with a description", () => {
    const keyRows = rendered.split("\n").filter((l) => l.startsWith("| `"))
    expect(keyRows.length).toBeGreaterThan(100)
    for (const row of keyRows) expect(row, row).not.toMatch(/\|\s*\|$/)
    for (const key of ["working_dir", "termination_idle_time", "retry_policy", "ssh_config", "scale_up_delay", "compute_capability", "total_memory", "identity_file", "replicas", "gateway"]) {
      expect(rendered).toContain(`| \`${key}\``)
    }
  })
})
