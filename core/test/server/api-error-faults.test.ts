// How store and disk failures become HTTP answers: an unreachable database and a full disk are
// 503s that name the database or the disk (a client may try again), never a 500.
import { describe, expect, it } from "vitest"
import { fromStateStore, serverError, wireBody } from "../../src/server/ApiError.ts"
import { StateStoreError } from "../../src/ports/StateStore.ts"

describe("store and disk failures as answers", () => {
  it("an unavailable store is a 503 naming the database", () => {
    const e = fromStateStore(new StateStoreError({ module: "StateStore", method: "runs.get", reason: "Unavailable", message: "read ECONNRESET" }))
    expect(e.status).toBe(503)
    expect(wireBody(e).detail[0]!.msg).toBe("The server's database (state store) is unavailable, try again shortly: read ECONNRESET")
  })

  it("a store failure for lack of space is a 503 saying the server's disk is full, whatever its reason", () => {
    for (const reason of ["Unavailable", "Unknown"] as const) {
      const e = fromStateStore(new StateStoreError({ module: "FileLogs", method: "logs.append", reason, message: "ENOSPC: no space left on device, write" }))
      expect(e.status).toBe(503)
      expect(e.message).toMatch(/^The server's disk is full \(no space left on device\): free space on it and try again\. ENOSPC/)
    }
  })

  it("a server error caused by ENOSPC (by message or by the code of a cause) is the disk-full 503; others stay 500", () => {
    expect(serverError("The blob store failed: put failed: ENOSPC: no space left on device, write").status).toBe(503)
    const cause = Object.assign(new Error("write failed"), { cause: Object.assign(new Error("x"), { code: "ENOSPC" }) })
    expect(serverError("The blob store failed: write failed", cause).status).toBe(503)
    expect(serverError("The blob store failed: EACCES").status).toBe(500)
  })
})
