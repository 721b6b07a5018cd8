// Stack name rules, resolution of relative names, and param matching.
import { describe, expect, it } from "vitest"
import { paramsMatch, parseStackPath, resolveStackPath, STACK_NAME_RULE } from "../../../src/stacks/server/StackName.ts"

describe("stack names", () => {
  it("accepts latin letters, digits, '/', '_' and '-'", () => {
    expect(resolveStackPath("plots/week_1-a", "alice")).toEqual({ owner: "alice", name: "plots/week_1-a" })
    expect(resolveStackPath("/bob/x", "alice")).toEqual({ owner: "bob", name: "x" })
    expect(parseStackPath("bob/a/b")).toEqual({ owner: "bob", name: "a/b" })
  })
  it("refuses anything else with the rule in the message", () => {
    for (const bad of ["a b", "a//b", "/a", "x/", "ünï", "a.b", ""]) {
      const r = resolveStackPath(bad, "alice")
      expect(typeof r).toBe("string")
    }
    expect(resolveStackPath("a b", "alice")).toContain(STACK_NAME_RULE)
    expect(parseStackPath("nouser")).toContain("owner/name")
  })
  it("a relative name needs a user", () => {
    expect(resolveStackPath("x", undefined)).toContain("/owner/x")
  })
  it("params match when every requested key is equal", () => {
    expect(paramsMatch({ a: 1, b: "x" }, { a: 1 })).toBe(true)
    expect(paramsMatch({ a: 1 }, {})).toBe(true)
    expect(paramsMatch({ a: 1 }, { a: "1" })).toBe(false)
    expect(paramsMatch({ a: 1 }, { b: 1 })).toBe(false)
    // Nested objects match whatever their keys' order (jsonb keeps an order of its own).
    expect(paramsMatch({ m: { lr: 0.1, batch: 32 } }, { m: { batch: 32, lr: 0.1 } })).toBe(true)
    expect(paramsMatch({ m: { lr: 0.1, batch: 32 } }, { m: { batch: 32 } })).toBe(false)
    expect(paramsMatch({ m: [1, { a: 1, b: 2 }] }, { m: [1, { b: 2, a: 1 }] })).toBe(true)
    expect(paramsMatch({ m: [1, 2] }, { m: [2, 1] })).toBe(false)
    expect(paramsMatch({ m: null }, { m: {} })).toBe(false)
  })
})
