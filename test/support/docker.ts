// Docker helpers for tests: is dockerd reachable, and a busybox test image built locally
// (no registry is reachable here) by `docker import` of a busybox-static root filesystem.
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"

/** The image every Docker test runs: busybox with its applets, imported from a local rootfs. */
export const BUSYBOX_IMAGE = "dstack-ts-test/busybox:1"

const BUSYBOX_BINARY = process.env.DSTACK_TS_BUSYBOX ?? "/usr/bin/busybox"

/** The unix socket of the Docker Engine (DOCKER_HOST=unix://… or the default path). */
export const dockerSocketPath = (): string => {
  const host = process.env.DOCKER_HOST
  if (host?.startsWith("unix://")) return host.slice("unix://".length)
  return "/var/run/docker.sock"
}

const engineRequest = (method: string, urlPath: string, timeoutMs = 3_000): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    const req = http.request({ socketPath: dockerSocketPath(), path: urlPath, method, timeout: timeoutMs }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => {
        body += chunk
      })
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
      res.on("error", reject)
    })
    req.on("timeout", () => req.destroy(new Error(`Docker Engine did not answer ${method} ${urlPath} in ${timeoutMs} ms`)))
    req.on("error", reject)
    req.end()
  })

/** Why Docker cannot be used, or undefined when dockerd answers `/_ping`. */
export const dockerUnavailableReason = async (): Promise<string | undefined> => {
  try {
    const res = await engineRequest("GET", "/_ping")
    return res.status === 200 ? undefined : `dockerd answered /_ping with HTTP ${res.status}`
  } catch (error) {
    return `dockerd is not reachable at ${dockerSocketPath()}: ${(error as Error).message}`
  }
}

/** True when dockerd answers on its socket. */
export const dockerAvailable = async (): Promise<boolean> => (await dockerUnavailableReason()) === undefined

const run = (file: string, args: ReadonlyArray<string>): Promise<string> =>
  new Promise((resolve, reject) => {
    execFile(file, [...args], { maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} ${args.join(" ")} failed: ${stderr || error.message}`))
      else resolve(stdout)
    })
  })

const imageExists = async (image: string): Promise<boolean> =>
  (await engineRequest("GET", `/images/${encodeURIComponent(image)}/json`)).status === 200

let building: Promise<string> | undefined

/**
 * Builds {@link BUSYBOX_IMAGE} once (a no-op when it already exists) and returns its name.
 * The root filesystem holds /bin/busybox with a relative symlink per applet, /etc/passwd with
 * root and nobody, and the usual empty directories.
 */
export const ensureBusyboxImage = (): Promise<string> => {
  building ??= buildBusyboxImage().catch((error) => {
    building = undefined
    throw error
  })
  return building
}

const buildBusyboxImage = async (): Promise<string> => {
  if (await imageExists(BUSYBOX_IMAGE)) return BUSYBOX_IMAGE
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "dstack-ts-busybox-"))
  try {
    for (const dir of ["bin", "etc", "tmp", "root", "proc", "sys", "dev", "workflow", "home"]) {
      await fs.mkdir(path.join(root, dir), { recursive: true })
    }
    await fs.chmod(path.join(root, "tmp"), 0o1777)
    await fs.copyFile(BUSYBOX_BINARY, path.join(root, "bin", "busybox"))
    await fs.chmod(path.join(root, "bin", "busybox"), 0o755)
    const applets = (await run(BUSYBOX_BINARY, ["--list"])).split("\n").map((s) => s.trim()).filter(Boolean)
    for (const applet of applets) {
      if (applet === "busybox") continue
      await fs.symlink("busybox", path.join(root, "bin", applet)).catch(() => undefined)
    }
    await fs.writeFile(path.join(root, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/sh\n")
    await fs.writeFile(path.join(root, "etc", "group"), "root:x:0:\nnogroup:x:65534:\n")
    const tarball = path.join(root, "..", `${path.basename(root)}.tar`)
    await run("tar", ["-C", root, "-cf", tarball, "."])
    try {
      await run("docker", ["import", "--change", "ENV PATH=/bin", tarball, BUSYBOX_IMAGE])
    } finally {
      await fs.rm(tarball, { force: true })
    }
    return BUSYBOX_IMAGE
  } finally {
    await fs.rm(root, { recursive: true, force: true })
  }
}

/** Ids of containers (running or not) that carry a label, e.g. `dstack-ts.job=<name>`. */
export const containersWithLabel = async (label: string): Promise<ReadonlyArray<string>> => {
  const filters = encodeURIComponent(JSON.stringify({ label: [label] }))
  const res = await engineRequest("GET", `/containers/json?all=1&filters=${filters}`)
  if (res.status !== 200) throw new Error(`listing containers failed: HTTP ${res.status} ${res.body}`)
  return (JSON.parse(res.body) as Array<{ Id: string }>).map((c) => c.Id)
}

/** The labels of a container (`docker inspect`'s Config.Labels). */
export const containerLabels = async (id: string): Promise<Record<string, string>> => {
  const res = await engineRequest("GET", `/containers/${encodeURIComponent(id)}/json`)
  if (res.status !== 200) throw new Error(`inspecting container ${id} failed: HTTP ${res.status} ${res.body}`)
  return (JSON.parse(res.body) as { Config?: { Labels?: Record<string, string> } }).Config?.Labels ?? {}
}

/** The container runtimes dockerd knows (`runc`, and `nvidia` where the NVIDIA toolkit is set up). */
export const dockerRuntimes = async (): Promise<ReadonlyArray<string>> => {
  const res = await engineRequest("GET", "/info")
  if (res.status !== 200) throw new Error(`docker info failed: HTTP ${res.status} ${res.body}`)
  return Object.keys((JSON.parse(res.body) as { Runtimes?: Record<string, unknown> }).Runtimes ?? {})
}
