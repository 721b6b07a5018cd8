import { describe, expect, it } from "vitest"
import { makeClientAddress, TrustedProxiesError } from "../../src/services/ClientAddress.ts"

describe("the client address of a service request", () => {
  it("is the connection's peer when no proxy is trusted, whatever X-Forwarded-For says", () => {
    const client = makeClientAddress(undefined)
    expect(client("198.51.100.1", "203.0.113.5")).toBe("198.51.100.1")
    expect(makeClientAddress([" ", ""])("198.51.100.1", "203.0.113.5")).toBe("198.51.100.1")
  })

  it("behind trusted proxies, is the nearest address of X-Forwarded-For that is not trusted itself", () => {
    const client = makeClientAddress(["10.0.0.0/8", "loopback"])
    // A load balancer (trusted) called by the client.
    expect(client("10.0.0.2", "203.0.113.5")).toBe("203.0.113.5")
    // Two trusted hops: the client's own claims left of the first untrusted address are not read.
    expect(client("127.0.0.1", "192.0.2.66, 203.0.113.5, 10.1.2.3")).toBe("203.0.113.5")
    // IPv4-mapped IPv6 peers (a dual-stack socket) match the IPv4 ranges.
    expect(client("::ffff:127.0.0.1", "203.0.113.9")).toBe("203.0.113.9")
    // A trusted peer that says nothing is the client itself.
    expect(client("10.0.0.2", undefined)).toBe("10.0.0.2")
    // An untrusted peer cannot choose its address by sending the header.
    expect(client("198.51.100.1", "203.0.113.5")).toBe("198.51.100.1")
    expect(client(undefined, "203.0.113.5")).toBeUndefined()
  })

  it("refuses an entry that is not an address, a range or a known name, naming it", () => {
    for (const bad of ["10.0.0.0/99", "example.com", "10.0.0.1/8x"]) {
      let error: unknown
      try {
        makeClientAddress(["loopback", bad])
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(TrustedProxiesError)
      expect((error as Error).message).toContain(`trusted proxy ${JSON.stringify(bad)} is not an IP address, a CIDR range`)
    }
  })
})
