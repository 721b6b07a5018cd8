// A private image registry for tests: Debian's `docker-registry` with htpasswd (bcrypt) auth on
// a loopback port, holding a copy of the busybox test image pushed with `docker login`. The
// daemon treats loopback registries as insecure-allowed, so plain HTTP works.
import { execFileSync, spawn, type ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { BUSYBOX_IMAGE, ensureBusyboxImage } from "./docker.ts"

export interface PrivateRegistry {
  readonly host: string
  readonly image: string
  readonly username: string
  readonly password: string
  readonly stop: () => Promise<void>
}

const which = (command: string): string | undefined => {
  try {
    return execFileSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" }).trim() || undefined
  } catch {
    return undefined
  }
}

/** Why a private registry cannot be started here, or undefined when it can. */
export const registryUnavailableReason = (): string | undefined =>
  which("docker-registry") === undefined
    ? "docker-registry is not installed (apt-get install -y docker-registry)"
    : which("htpasswd") === undefined
      ? "htpasswd is not installed (apt-get install -y apache2-utils)"
      : undefined

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
    server.on("error", reject)
  })

const waitListening = async (port: number, child: ChildProcess, log: () => string) => {
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited:\n${log()}`)
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => (socket.end(), resolve(true)))
      socket.on("error", () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`docker-registry did not listen on ${port}:\n${log()}`)
}

/** Starts a registry with one user, pushes the busybox test image to it, and removes the local copy of that tag. */
export const startPrivateRegistry = async (): Promise<PrivateRegistry> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-registry-"))
  const username = "tester"
  const password = `pw-${Math.random().toString(36).slice(2)}`
  fs.writeFileSync(path.join(dir, "htpasswd"), execFileSync("htpasswd", ["-Bbn", username, password], { encoding: "utf8" }))
  const port = await freePort()
  fs.writeFileSync(
    path.join(dir, "config.yml"),
    [
      "version: 0.1",
      "storage:",
      `  filesystem: { rootdirectory: ${path.join(dir, "data")} }`,
      "http:",
      `  addr: 127.0.0.1:${port}`,
      "auth:",
      `  htpasswd: { realm: dstack-test, path: ${path.join(dir, "htpasswd")} }`,
      ""
    ].join("\n")
  )
  let output = ""
  const child = spawn("docker-registry", ["serve", path.join(dir, "config.yml")], { stdio: ["ignore", "pipe", "pipe"] })
  child.stdout!.on("data", (d) => (output += d))
  child.stderr!.on("data", (d) => (output += d))
  await waitListening(port, child, () => output)
  const host = `127.0.0.1:${port}`
  const image = `${host}/private/busybox:1`
  await ensureBusyboxImage()
  // A throwaway docker config, so the login never touches the user's own.
  const dockerConfig = path.join(dir, "docker-config")
  const docker = (...args: Array<string>) => execFileSync("docker", ["--config", dockerConfig, ...args], { encoding: "utf8", input: args[0] === "login" ? password : undefined })
  docker("login", host, "-u", username, "--password-stdin")
  docker("tag", BUSYBOX_IMAGE, image)
  docker("push", image)
  docker("rmi", image)
  return {
    host,
    image,
    username,
    password,
    stop: async () => {
      child.kill("SIGTERM")
      await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once("exit", r)))
      try {
        execFileSync("docker", ["rmi", "-f", image], { stdio: "ignore" })
      } catch {
        // not pulled by the test
      }
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}
