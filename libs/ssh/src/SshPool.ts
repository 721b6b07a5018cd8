/**
 * SSH connections shared per host: one session per (user, host, port, key, jump host), opened
 * on first use, reopened with exponential backoff when it has dropped, closed after it has had
 * no holder for a while. Login refusals are not retried (another try cannot pass).
 */
import { createHash } from "node:crypto"
import { HopFailure, type HostAccess, openSession, type Session, type SessionOptions } from "./SshSession.ts"

export interface PoolOptions extends SessionOptions {
  /** Tries to (re)open a session before giving up, the first included. */
  readonly reconnectAttempts: number
  /** The first backoff delay; it doubles per try, up to `maxBackoffMs`. */
  readonly backoffMs: number
  readonly maxBackoffMs: number
  /** How long a session with no holder stays open for the next user. */
  readonly idleCloseMs: number
}

interface Entry {
  session?: Session
  opening?: Promise<Session>
  holders: number
  idleTimer?: ReturnType<typeof setTimeout>
}

const keyOf = (access: HostAccess): string => {
  const hop = (a: Omit<HostAccess, "proxyJump">) =>
    `${a.user}@${a.hostname}:${a.port}#${createHash("sha256").update(`${a.privateKey}\0${a.hostKey ?? ""}`).digest("hex").slice(0, 16)}`
  return access.proxyJump ? `${hop(access)}<${hop(access.proxyJump)}` : hop(access)
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export class SshPool {
  private readonly entries = new Map<string, Entry>()
  private closedAll = false

  constructor(private readonly options: PoolOptions) {}

  private entry(access: HostAccess): Entry {
    const key = keyOf(access)
    let entry = this.entries.get(key)
    if (entry === undefined) {
      entry = { holders: 0 }
      this.entries.set(key, entry)
    }
    return entry
  }

  /** Keeps the host's session from being closed as idle until `release` is called. */
  hold(access: HostAccess): () => void {
    const entry = this.entry(access)
    entry.holders++
    if (entry.idleTimer) clearTimeout(entry.idleTimer)
    entry.idleTimer = undefined
    let released = false
    return () => {
      if (released) return
      released = true
      entry.holders--
      if (entry.holders === 0) {
        entry.idleTimer = setTimeout(() => {
          if (entry.holders === 0) entry.session?.close()
        }, this.options.idleCloseMs)
        entry.idleTimer.unref?.()
      }
    }
  }

  /** The host's open session, or a new one (tried with backoff while the host is unreachable). */
  session(access: HostAccess): Promise<Session> {
    if (this.closedAll) return Promise.reject(new HopFailure("other", "pool", "the SSH transport has been closed"))
    const entry = this.entry(access)
    if (entry.session && !entry.session.isClosed()) return Promise.resolve(entry.session)
    if (entry.opening) return entry.opening
    const opening = this.open(access).then(
      (session) => {
        entry.opening = undefined
        if (this.closedAll) {
          session.close()
          throw new HopFailure("other", "pool", "the SSH transport has been closed")
        }
        entry.session = session
        return session
      },
      (error: unknown) => {
        entry.opening = undefined
        throw error
      }
    )
    entry.opening = opening
    return opening
  }

  private async open(access: HostAccess): Promise<Session> {
    let delay = this.options.backoffMs
    for (let attempt = 1; ; attempt++) {
      try {
        return await openSession(access, this.options)
      } catch (error) {
        const retryable = error instanceof HopFailure && (error.kind === "unreachable" || error.kind === "timeout")
        if (!retryable || attempt >= this.options.reconnectAttempts || this.closedAll) throw error
        await sleep(delay)
        delay = Math.min(delay * 2, this.options.maxBackoffMs)
      }
    }
  }

  /** Closes every open session; the next use of a host opens a new one. */
  dropSessions(): void {
    for (const entry of this.entries.values()) entry.session?.close()
  }

  /** Closes every session; later calls fail. */
  closeAll(): void {
    this.closedAll = true
    for (const entry of this.entries.values()) {
      if (entry.idleTimer) clearTimeout(entry.idleTimer)
      entry.session?.close()
    }
    this.entries.clear()
  }
}
