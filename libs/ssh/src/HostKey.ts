/**
 * Host keys: the public key a server presents during the handshake, written as an OpenSSH
 * public key line (`ssh-ed25519 AAAA…`, as in known_hosts), its SHA256 fingerprint as
 * `ssh-keygen -l` prints it, and the host-key algorithms to ask for so that a host with several
 * keys presents the one recorded.
 */
import { createHash } from "node:crypto"

/** The key type written at the start of an SSH public key blob (`ssh-ed25519`, `ssh-rsa` …). */
const typeOfBlob = (blob: Buffer): string | undefined => {
  if (blob.length < 4) return undefined
  const length = blob.readUInt32BE(0)
  if (length === 0 || length > 64 || 4 + length > blob.length) return undefined
  return blob.subarray(4, 4 + length).toString("latin1")
}

/** A key blob (the raw bytes the server sent) as an OpenSSH public key line: `TYPE BASE64`. */
export const publicKeyLine = (blob: Buffer): string => `${typeOfBlob(blob) ?? "unknown"} ${blob.toString("base64")}`

/**
 * The parts of a public key line (`TYPE BASE64 [comment]`, or a known_hosts line with host
 * names first); undefined when it holds no key.
 */
export const parsePublicKey = (line: string): { readonly type: string; readonly blob: Buffer } | undefined => {
  const words = line.trim().split(/\s+/)
  for (let i = 0; i + 1 < words.length; i++) {
    if (!/^[a-z0-9@.-]+$/.test(words[i]) || !/^[A-Za-z0-9+/]+={0,2}$/.test(words[i + 1])) continue
    const blob = Buffer.from(words[i + 1], "base64")
    if (typeOfBlob(blob) === words[i]) return { type: words[i], blob }
  }
  return undefined
}

/**
 * The SHA256 fingerprint of a public key line (`SHA256:…`, as `ssh-keygen -l` prints it), or
 * the line itself when it holds no key.
 *
 * @example
 * fingerprint("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI…") // "SHA256:2pOVR0…"
 */
export const fingerprint = (publicKey: string): string => {
  const parsed = parsePublicKey(publicKey)
  return parsed === undefined ? publicKey : `SHA256:${createHash("sha256").update(parsed.blob).digest("base64").replace(/=+$/, "")}`
}

/** Whether two public key lines hold the same key (comments and host names aside). */
export const sameKey = (a: string, b: string): boolean => {
  const x = parsePublicKey(a)
  const y = parsePublicKey(b)
  return x !== undefined && y !== undefined && x.type === y.type && x.blob.equals(y.blob)
}

/** The host-key algorithms a client offers (ssh2's defaults, in its order). */
const ALGORITHMS = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]

/**
 * The host-key algorithms to offer when `recorded` is the host's known key: that key's first,
 * so a host with several keys presents the recorded one; the rest after it, so a host that no
 * longer has that key presents another and is refused as changed (not as a failed handshake).
 */
export const hostKeyAlgorithms = (recorded: string): ReadonlyArray<string> => {
  const type = parsePublicKey(recorded)?.type
  const first = type === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : ALGORITHMS.includes(type ?? "") ? [type!] : []
  return [...first, ...ALGORITHMS.filter((a) => !first.includes(a))]
}
