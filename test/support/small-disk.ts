// A small filesystem of its own (a tmpfs, mounted as root) for the disk-full tests, and a way to
// fill it to the last byte and free it again. `smallDisk.available` says whether this process
// may mount (root with CAP_SYS_ADMIN); the tests skip loudly without it.
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export interface SmallDisk {
  readonly dir: string
  /** Fills the filesystem until a write fails with ENOSPC; answers the bytes written. */
  readonly fill: () => number
  /** Removes what `fill` wrote. */
  readonly free: () => void
  readonly unmount: () => void
}

/** Whether a tmpfs can be mounted here, and why not. */
export const canMount = (): { readonly available: boolean; readonly reason: string } => {
  if (process.getuid?.() !== 0) return { available: false, reason: "mounting a tmpfs needs root" }
  const probe = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-mount-probe-"))
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", probe], { stdio: "pipe" })
    execFileSync("umount", [probe], { stdio: "pipe" })
    return { available: true, reason: "" }
  } catch (e) {
    return { available: false, reason: `cannot mount a tmpfs: ${String((e as { stderr?: unknown }).stderr ?? e).trim()}` }
  } finally {
    fs.rmSync(probe, { recursive: true, force: true })
  }
}

/** Mounts a tmpfs of `sizeMb` at `dir` (created if missing). */
export const mountSmallDisk = (dir: string, sizeMb: number): SmallDisk => {
  fs.mkdirSync(dir, { recursive: true })
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${sizeMb}m`, "tmpfs", dir], { stdio: "pipe" })
  const filler = path.join(dir, "filler")
  return {
    dir,
    fill: () => {
      let written = 0
      const fd = fs.openSync(filler, "a")
      try {
        for (const size of [1 << 20, 4096, 1]) {
          const chunk = Buffer.alloc(size, 0x2e)
          for (;;) {
            try {
              written += fs.writeSync(fd, chunk)
            } catch (e) {
              if ((e as { code?: string }).code === "ENOSPC") break
              throw e
            }
          }
        }
      } finally {
        fs.closeSync(fd)
      }
      return written
    },
    free: () => fs.rmSync(filler, { force: true }),
    unmount: () => {
      try {
        execFileSync("umount", ["-l", dir], { stdio: "pipe" })
      } catch {
        // not mounted (any more)
      }
    }
  }
}
