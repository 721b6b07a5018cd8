// Builds the runner image the kubernetes backend's pods install the runner from, locally (no
// registry is reachable here): /opt/dstack-runner holds this machine's node binary with its
// glibc loader and libraries (so it runs in any Linux image, busybox included), the bundled pod
// runner (k8s-pod-runner.ts), a static busybox and `start`. The layout is the contract the
// backend's README describes for `runner_image`.
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { RunnerLaunch } from "@dstack-ts/core"

const run = (file: string, args: ReadonlyArray<string>): Promise<string> =>
  new Promise((resolve, reject) => {
    execFile(file, [...args], { maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} ${args.join(" ")} failed: ${stderr || error.message}`))
      else resolve(stdout)
    })
  })

const imageExists = async (image: string) => run("docker", ["image", "inspect", image]).then(() => true, () => false)

let building: Promise<string> | undefined

/** Builds (once per bundle content) and answers `dstack-ts-test/k8s-runner:<hash>`. */
export const ensureK8sRunnerImage = (): Promise<string> => {
  building ??= build().catch((error) => {
    building = undefined
    throw error
  })
  return building
}

const build = async (): Promise<string> => {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "dstack-ts-k8s-runner-"))
  try {
    const dir = path.join(root, "opt", "dstack-runner")
    await fs.mkdir(path.join(dir, "lib"), { recursive: true })
    const entry = fileURLToPath(new URL("./k8s-pod-runner.ts", import.meta.url))
    const bundle = await RunnerLaunch.bundleRunner(entry, path.join(root, "bundle"))
    await fs.copyFile(bundle.file, path.join(dir, "runner.mjs"))
    await fs.rm(path.join(root, "bundle"), { recursive: true, force: true })
    const image = `dstack-ts-test/k8s-runner:${bundle.sha256.slice(0, 12)}`
    if (await imageExists(image)) return image
    const node = (await run("sh", ["-c", "command -v node"])).trim()
    await fs.copyFile(node, path.join(dir, "node"))
    let loader = ""
    for (const line of (await run("ldd", [node])).split("\n")) {
      const lib = /=>\s*(\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+ld-linux\S*)/.exec(line)?.[1]
      if (lib === undefined || !lib.startsWith("/")) continue
      if (/ld-linux/.test(lib)) loader = lib
      await fs.copyFile(lib, path.join(dir, "lib", path.basename(lib)))
    }
    if (loader === "") throw new Error(`no dynamic loader found in ldd ${node}`)
    await fs.copyFile("/usr/bin/busybox", path.join(dir, "busybox"))
    // `start` runs from wherever the directory was copied to (the pod's emptyDir).
    await fs.writeFile(
      path.join(dir, "start"),
      [
        "d=\"${DSTACK_RUNNER_DIR:-/dstack-runner}\"",
        `exec "$d/lib/${path.basename(loader)}" --library-path "$d/lib" "$d/node" "$d/runner.mjs" "$@"`,
        ""
      ].join("\n")
    )
    const tarball = path.join(os.tmpdir(), `${path.basename(root)}.tar`)
    await run("tar", ["-C", root, "--exclude=./bundle", "-cf", tarball, "opt"])
    try {
      await run("docker", ["import", "--change", "ENV PATH=/opt/dstack-runner", tarball, image])
    } finally {
      await fs.rm(tarball, { force: true })
    }
    return image
  } finally {
    await fs.rm(root, { recursive: true, force: true })
  }
}
