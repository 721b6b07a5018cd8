/**
 * Small HTTP checks made through an SSH session without starting anything on the host: a GET
 * over a `direct-tcpip` channel (the runner's healthcheck on the host's 127.0.0.1) or over a
 * `direct-streamlocal` channel (Docker's `/_ping` on its socket), as the login user.
 */
import type { Session } from "./SshSession.ts"

/** GETs `path` over the stream (HTTP/1.0, so the server closes it); answers the status, or undefined. */
const getOver = (stream: NodeJS.ReadWriteStream & { close?: () => void }, path: string, timeoutMs: number) =>
  new Promise<number | undefined>((resolve) => {
    let head = ""
    const timer = setTimeout(() => done(undefined), timeoutMs)
    const done = (status: number | undefined) => {
      clearTimeout(timer)
      stream.removeAllListeners("data")
      stream.close?.()
      resolve(status)
    }
    stream.on("data", (chunk: Buffer) => {
      head += chunk.toString("latin1")
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(head)
      if (match) done(Number(match[1]))
      else if (head.length > 64) done(undefined)
    })
    stream.on("error", () => done(undefined))
    stream.on("end", () => done(undefined))
    stream.write(`GET ${path} HTTP/1.0\r\nHost: localhost\r\n\r\n`)
  })

/** The status of `GET path` on the host's 127.0.0.1:port, or undefined when nothing answers. */
export const httpStatusOnHost = async (session: Session, port: number, path: string, timeoutMs = 3000): Promise<number | undefined> => {
  try {
    return await getOver(await session.ssh.forwardOut("127.0.0.1", 0, "127.0.0.1", port), path, timeoutMs)
  } catch {
    return undefined // the channel was refused: nothing listens there
  }
}

/** Docker's `/_ping` on the host's socket as the login user: the status, or why not. */
export const dockerPing = async (session: Session, socketPath = "/var/run/docker.sock"): Promise<{ status?: number; problem?: string }> => {
  try {
    const status = await getOver(await session.ssh.forwardOutStreamLocal(socketPath), "/_ping", 3000)
    return status === undefined ? { problem: "no answer" } : { status }
  } catch (error) {
    return { problem: error instanceof Error ? error.message : String(error) }
  }
}

/** Polls the healthcheck until it answers 200 or `seconds` pass. */
export const waitHealthy = async (session: Session, port: number, seconds: number): Promise<boolean> => {
  const deadline = Date.now() + seconds * 1000
  for (;;) {
    if ((await httpStatusOnHost(session, port, "/api/healthcheck")) === 200) return true
    if (Date.now() >= deadline) return false
    await new Promise((r) => setTimeout(r, 200))
  }
}
