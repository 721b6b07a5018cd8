// `dstack server`'s start logic with the default build (first-party plugins, embedded PGlite
// state, fs blobs): it listens, saves the admin's main project so that a client works at
// once, and offers this machine through the local backend.
import { afterAll, describe, expect, it } from "vitest"
import { mkdtemp, readFile, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Client } from "@dstack-ts/client"
import { startServer } from "../src/commands/server.ts"
import { CliError } from "../src/context.ts"

const dirs: Array<string> = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

describe("dstack server", { timeout: 120_000 }, () => {
  it("starts on a free port and configures the main project with the admin token", async () => {
    const home = await mkdtemp(join(tmpdir(), "dstack-server-"))
    dirs.push(home)
    const configPath = join(home, ".dstack", "config.yml")
    const running = await startServer({ host: "127.0.0.1", port: 0, serverDir: join(home, ".dstack", "server"), adminToken: "admin-secret", configPath })
    try {
      expect(running.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
      expect(await readFile(configPath, "utf8")).toContain("token: admin-secret")
      const client = await Client.fromConfig({ configPath, env: {} })
      expect(client.project).toBe("main")
      expect((await client.users.getMyUser()).username).toBe("admin")
      expect((await client.projects.get()).projectName).toBe("main")
      // the default build lists the first-party plugins: the local backend offers this machine
      const res = await fetch(`${running.url}/api/project/main/runs/get_plan`, {
        method: "POST",
        headers: { authorization: "Bearer admin-secret", "content-type": "application/json" },
        body: JSON.stringify({ run_spec: { repo_id: "x", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["true"], resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } } } })
      })
      const plan = (await res.json()) as any
      expect(plan.job_plans[0].offers[0]).toMatchObject({ backend: "local", price: 0 })
      const wrong = await Client.connect({ name: "main", url: running.url, token: "nope" }).users.getMyUser().catch((e) => e)
      expect(wrong.reason).toBe("Unauthenticated")
    } finally {
      await running.close()
    }
  })

  it("fails clearly when the port is taken", async () => {
    const home = await mkdtemp(join(tmpdir(), "dstack-server-"))
    dirs.push(home)
    const first = await startServer({ host: "127.0.0.1", port: 0, serverDir: join(home, "a"), adminToken: "t", configPath: undefined })
    try {
      const port = Number(new URL(first.url).port)
      const error = await startServer({ host: "127.0.0.1", port, serverDir: join(home, "b"), adminToken: "t", configPath: undefined }).catch((e) => e)
      expect(error).toBeInstanceOf(CliError)
      expect(error.message).toBe(`Port ${port} on 127.0.0.1 is already in use (pass --port)`)
    } finally {
      await first.close()
    }
  })
})
