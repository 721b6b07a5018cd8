// `dstack server`'s start logic with the default build (first-party plugins, embedded PGlite
// state, fs blobs): it listens, saves the admin's main project so that a client works at
// once, and offers this machine through the local backend. Its blob store from the
// environment: an S3 bucket (on the S3 stand-in) with DSTACK_SERVER_S3_BUCKET, and the refusal
// of PostgreSQL with local blobs unless --allow-local-blobs.
import { afterAll, describe, expect, it } from "vitest"
import { execFile } from "node:child_process"
import { mkdtemp, readFile, rm } from "node:fs/promises"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Client, Stacks } from "@dstack-ts/client"
import { parseProxyAddress, startServer } from "../src/commands/server.ts"
import { CliError } from "../src/context.ts"
import { serverBlobs } from "../src/serverBlobs.ts"
import { describeWith } from "../../test/support/components.ts"
import { createTestDatabase, findPostgres } from "../../test/support/postgres.ts"
import { startS3Standin } from "../../test/support/s3-standin.ts"

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

  it("refuses a trusted proxy that is not an address or a range in one line naming the flag and the entry", async () => {
    const home = await mkdtemp(join(tmpdir(), "dstack-server-"))
    dirs.push(home)
    const error = await startServer({ host: "127.0.0.1", port: 0, serverDir: home, adminToken: "t", configPath: undefined, trustedProxies: ["10.0.0.0/8", "lb.internal"] })
      .catch((e) => e)
    expect(error).toBeInstanceOf(CliError)
    expect(error.message).toMatch(/^--trusted-proxies \(DSTACK_SERVER_TRUSTED_PROXIES\): trusted proxy "lb.internal" is not an IP address, a CIDR range/)
  })
})

describe("dstack server's start", { timeout: 120_000 }, () => {
  it("loads the Kubernetes client only once a project has a kubernetes backend; the SSH client and the PostgreSQL driver not at all on the embedded store", async () => {
    const dir = await mkdtemp(join(tmpdir(), "dstack-server-"))
    dirs.push(dir)
    // A Node.js child with a resolve hook that notes every package it loads (Deno runs it too).
    const { stdout } = await promisify(execFile)(
      "Deno" in globalThis ? "node" : process.execPath,
      ["--import", "tsx", "--import", fileURLToPath(new URL("./support/record-packages.mjs", import.meta.url)), fileURLToPath(new URL("./support/server-packages.ts", import.meta.url)), dir],
      { env: { ...process.env, RECORD_PACKAGES_FILE: join(dir, "packages.txt") }, timeout: 90_000 }
    )
    const seen = JSON.parse(stdout.trim().split("\n").at(-1)!) as { atStart: Array<string>; afterKubernetes: Array<string>; create: number }
    // What the start needs is there (the hook sees the packages), what no project uses is not.
    expect(seen.atStart).toEqual(expect.arrayContaining(["@dstack-ts/backend-kubernetes", "@electric-sql/pglite", "hono"]))
    for (const unused of ["@kubernetes/client-node", "node-ssh", "ssh2", "postgres"]) expect(seen.atStart).not.toContain(unused)
    // Adding the backend makes it (the server checks a configuration before storing it): now it is.
    expect(seen.create).toBe(200)
    expect(seen.afterKubernetes).toContain("@kubernetes/client-node")
  })
})

describe("dstack server's SSH proxy", { timeout: 120_000 }, () => {
  it("starts with --sshproxy-port, keeps its host key in the server directory across restarts", async () => {
    const home = await mkdtemp(join(tmpdir(), "dstack-server-"))
    dirs.push(home)
    const serverDir = join(home, "server")
    const start = () => startServer({ host: "127.0.0.1", port: 0, serverDir, adminToken: "t", configPath: undefined, sshProxyPort: 0, sshProxyAddress: "ssh.example:2222" })
    const first = await start()
    const key = await readFile(join(serverDir, "sshproxy_host_key"), "utf8")
    await first.close()
    const second = await start()
    try {
      expect(await readFile(join(serverDir, "sshproxy_host_key"), "utf8")).toBe(key)
      expect(key).toMatch(/^-----BEGIN RSA PRIVATE KEY-----/)
    } finally {
      await second.close()
    }
  })

  it("parses --sshproxy-address as host or host:port, and refuses anything else naming the flag", () => {
    expect(parseProxyAddress("ssh.example")).toEqual({ hostname: "ssh.example", port: undefined })
    expect(parseProxyAddress("ssh.example:2222")).toEqual({ hostname: "ssh.example", port: 2222 })
    expect(parseProxyAddress("[::1]:22")).toEqual({ hostname: "::1", port: 22 })
    expect(() => parseProxyAddress("a:b:c")).toThrow(/--sshproxy-address: "a:b:c" is not host or host:port/)
    expect(() => parseProxyAddress("host:70000")).toThrow(/--sshproxy-address/)
  })
})

describe("dstack server's blob store", { timeout: 120_000 }, () => {
  it("is fs under the server directory without DSTACK_SERVER_S3_BUCKET, s3 with it", () => {
    expect(serverBlobs({}, "/srv/dstack")).toEqual({ driver: "fs", options: { base: join("/srv/dstack", "blobs") } })
    const creds = { AWS_ACCESS_KEY_ID: "AKID", AWS_SECRET_ACCESS_KEY: "secret" }
    expect(serverBlobs({ ...creds, DSTACK_SERVER_S3_BUCKET: "b", DSTACK_SERVER_S3_BUCKET_REGION: "eu-west-1" }, "/x")).toEqual({
      driver: "s3",
      options: { bucket: "b", region: "eu-west-1", endpoint: "https://s3.eu-west-1.amazonaws.com", access_key_id: "AKID", secret_access_key: "secret" }
    })
    const minio = serverBlobs({ ...creds, DSTACK_SERVER_S3_BUCKET: "b", AWS_ENDPOINT_URL: "http://minio:9000", DSTACK_SERVER_S3_PREFIX: "team-a" }, "/x")
    expect(minio.options).toMatchObject({ endpoint: "http://minio:9000", region: "us-east-1", base: "team-a" })
    // The S3-specific endpoint variable wins over the general one.
    expect(serverBlobs({ ...creds, DSTACK_SERVER_S3_BUCKET: "b", AWS_ENDPOINT_URL: "http://a", AWS_ENDPOINT_URL_S3: "http://b" }, "/x").options.endpoint).toBe("http://b")
  })

  it("names the missing credentials when only the bucket is set", () => {
    const error = (() => {
      try {
        return serverBlobs({ DSTACK_SERVER_S3_BUCKET: "b", AWS_ACCESS_KEY_ID: "AKID" }, "/x")
      } catch (e) {
        return e
      }
    })()
    expect(error).toBeInstanceOf(CliError)
    expect((error as Error).message).toBe("DSTACK_SERVER_S3_BUCKET is set, but AWS_SECRET_ACCESS_KEY is not: the s3 blob store needs credentials")
  })
})

const pg = await findPostgres()

describeWith("postgresql", pg.available, pg.reason, () => {
  it("refuses PostgreSQL with blobs on this machine unless --allow-local-blobs", { timeout: 120_000 }, async () => {
    const db = await createTestDatabase(pg.url, "dstack_cli_local_blobs")
    const home = await mkdtemp(join(tmpdir(), "dstack-server-pg-"))
    dirs.push(home)
    try {
      const env = { DSTACK_DATABASE_URL: db.url }
      const options = { host: "127.0.0.1", port: 0, serverDir: join(home, "server"), adminToken: "t", configPath: undefined, env }
      const error = await startServer(options).catch((e) => e)
      expect(error).toBeInstanceOf(CliError)
      expect(error.message).toContain("The state store `postgres` is shared by every server replica")
      expect(error.message).toContain("the blob store `fs`")
      expect(error.message).toContain("--allow-local-blobs")
      const running = await startServer({ ...options, allowLocalBlobs: true })
      await running.close()
    } finally {
      await db.drop()
    }
  })

  it("on PostgreSQL, keeps blobs in the S3 bucket, and refuses a missing bucket in one line", { timeout: 120_000 }, async () => {
    const s3 = await startS3Standin({ buckets: ["dstack"] })
    const home = await mkdtemp(join(tmpdir(), "dstack-server-s3-"))
    dirs.push(home)
    const db = await createTestDatabase(pg.url, "dstack_cli_s3_blobs")
    const env = {
      DSTACK_DATABASE_URL: db.url,
      DSTACK_SERVER_S3_BUCKET: "dstack",
      DSTACK_SERVER_S3_ENDPOINT: s3.endpoint,
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey
    }
    try {
      const running = await startServer({ host: "127.0.0.1", port: 0, serverDir: join(home, "server"), adminToken: "t", configPath: undefined, env })
      try {
        const bytes = Uint8Array.from({ length: 5000 }, (_, i) => i & 0xff)
        await Stacks.make({ url: running.url, token: "t" }).push("admin/in-the-bucket", bytes)
        expect(await Stacks.make({ url: running.url, token: "t" }).pull("admin/in-the-bucket")).toEqual(bytes)
        expect(s3.keys("dstack").some((k) => k.startsWith("m/stacks/"))).toBe(true)
      } finally {
        await running.close()
      }
      const error = await startServer({
        host: "127.0.0.1", port: 0, serverDir: join(home, "other"), adminToken: "t", configPath: undefined,
        env: { ...env, DSTACK_SERVER_S3_BUCKET: "missing" }
      }).catch((e) => e)
      expect(error).toBeInstanceOf(CliError)
      expect(error.message).toContain("The blob store `s3` cannot start")
      expect(error.message).toContain("404 NoSuchBucket")
      expect(error.message).toContain("\"missing\"")
    } finally {
      await s3.close()
      await db.drop()
    }
  })
})
