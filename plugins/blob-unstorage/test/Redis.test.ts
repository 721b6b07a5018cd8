// The unstorage BlobStore over a real redis-server (started here on a unix socket in a
// temporary directory) runs the BlobStore conformance suite. Skipped loudly without
// redis-server, except under CI=true.
import { afterAll } from "@effect/vitest"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import redisDriver from "unstorage/drivers/redis"
import { describeWith } from "../../../test/support/components.ts"
import { UnstorageBlobStore } from "../src/index.ts"
import { testBlobStore } from "@dstack-ts/core/testing"

const findRedis = (): string | undefined => {
  try {
    return execFileSync("sh", ["-c", "command -v redis-server"], { encoding: "utf8" }).trim() || undefined
  } catch {
    return undefined
  }
}

const start = async (binary: string): Promise<{ socket: string; child: ChildProcess; dir: string } | string> => {
  const dir = mkdtempSync(join(tmpdir(), "dstack-redis-"))
  const socket = join(dir, "redis.sock")
  const child = spawn(binary, ["--port", "0", "--unixsocket", socket, "--save", "", "--appendonly", "no", "--dir", dir], {
    stdio: "ignore"
  })
  for (let i = 0; i < 100 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 50))
  if (!existsSync(socket)) {
    child.kill()
    return "redis-server did not open its socket within 5 s"
  }
  return { socket, child, dir }
}

const binary = findRedis()
const server = binary === undefined ? "redis-server is not installed (apt-get install redis-server)" : await start(binary)

afterAll(() => {
  if (typeof server !== "string") {
    server.child.kill()
    rmSync(server.dir, { recursive: true, force: true })
  }
})

describeWith("redis", typeof server !== "string", typeof server === "string" ? server : "", () => {
  if (typeof server === "string") return
  testBlobStore(
    "UnstorageBlobStore.layer (redis driver, 64 KiB chunks)",
    UnstorageBlobStore.layer({ driver: redisDriver({ path: server.socket, base: "dstack-test" }), chunkSize: 64 * 1024 }),
    { largeSize: 300_001 }
  )
})
