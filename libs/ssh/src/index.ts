/**
 * @dstack-ts/ssh — the SSH library the first-party SSH plugins share (the `ssh` transport, the
 * `remote` backend, and backends that reach a cluster's login node): sessions on node-ssh with
 * `proxy_jump` and failures that name the hop, a pool with reconnection and backoff, local
 * TCP tunnels, HTTP checks over a session, and shell scripts run on the host.
 *
 * It is a library, not a plugin: it registers nothing, depends on no part of core, and may be
 * imported by any plugin (plugins import no other plugin).
 *
 * @module
 */
export { describeHop, HopFailure, type HopFailureKind, type HostAccess, openSession, type Session, type SessionOptions } from "./SshSession.ts"
export { fingerprint, hostKeyAlgorithms, parsePublicKey, publicKeyLine, sameKey } from "./HostKey.ts"
export { type PoolOptions, SshPool } from "./SshPool.ts"
export { openTunnel, type SshTunnel } from "./SshTunnel.ts"
export { dockerPing, httpStatusOnHost, waitHealthy } from "./OverSsh.ts"
export { type ExecResult, runScript, shQuote, streamScript, type StreamingScript } from "./Shell.ts"
