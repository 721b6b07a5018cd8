/**
 * The address a service request comes from, which `rate_limits` count and replicas are told in
 * `X-Real-IP`. Without trusted proxies it is the connection's peer. With them (the server behind
 * load balancers or reverse proxies, e.g. several server replicas behind one), a request whose
 * peer is trusted comes from the nearest address in its `X-Forwarded-For` that is not trusted
 * itself — read right to left, as each proxy appends the address it was called from — so that a
 * client cannot choose its own address by sending the header. Matching is proxy-addr's (IPs,
 * CIDR ranges, and the names `loopback`, `linklocal`, `uniquelocal`; IPv4-mapped IPv6 included).
 */
import proxyaddr from "proxy-addr"

/** The client's address from the peer's and the request's `X-Forwarded-For`. */
export type ClientAddress = (peer: string | undefined, forwardedFor: string | null | undefined) => string | undefined

/** An entry of the trusted proxies that is not an address, a range or a known name. */
export class TrustedProxiesError extends Error {
  readonly _tag = "TrustedProxiesError"
}

/**
 * Compiles the trusted proxies; throws `TrustedProxiesError` naming the first entry that is
 * neither an IP address, a CIDR range nor one of the names.
 */
export const makeClientAddress = (trusted: ReadonlyArray<string> | undefined): ClientAddress => {
  const entries = (trusted ?? []).map((t) => t.trim()).filter((t) => t !== "")
  if (entries.length === 0) return (peer) => peer
  for (const entry of entries) {
    try {
      proxyaddr.compile(entry)
    } catch (error) {
      throw new TrustedProxiesError(
        `trusted proxy ${JSON.stringify(entry)} is not an IP address, a CIDR range (10.0.0.0/8), or loopback, linklocal or uniquelocal: ${(error as Error).message}`
      )
    }
  }
  const trust = proxyaddr.compile(entries)
  return (peer, forwardedFor) => {
    if (peer === undefined) return undefined
    // proxy-addr reads the peer and the header off a request object; only these two are used.
    const req = { headers: forwardedFor ? { "x-forwarded-for": forwardedFor } : {}, socket: { remoteAddress: peer } }
    return proxyaddr(req as unknown as Parameters<typeof proxyaddr>[0], trust)
  }
}
