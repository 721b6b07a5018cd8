// A private git repo's credentials (upstream's `repo_creds`, given to repos/init) reach the
// runner's clone and nothing else. The repo is served by git's own `git http-backend` behind a
// small HTTP proxy that answers 401 unless the request carries the token as Basic auth; a run
// on the first-party local backend clones it and prints a file of it. The token is then
// searched for in every API answer, the job's log, the server's console, the runner's files
// (the checkout's .git/config included), the state store's files on disk (the server has a
// secrets key: credentials are sealed at rest) and the error of a run whose token is wrong. A
// second repo is cloned over SSH from a netns host with a private key as its credentials.
import { execFile, execFileSync, spawn } from "node:child_process"
import { promisify } from "node:util"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { createNetnsHosts, describeWithNetns, type NetnsHosts } from "../support/netns.ts"

const ADMIN = "repo-creds-admin-token"
const TOKEN = `ghp_canary${crypto.randomUUID().replaceAll("-", "")}`
const root = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-repo-creds-"))
const workDir = path.join(root, "runners")
const answers: Array<string> = []
const consoled: Array<string> = []
/** What the git proxy saw: each request's path and whether its credentials were right. */
const seen: Array<{ readonly path: string; readonly authorized: boolean }> = []

let server: Server
let git: http.Server
let gitUrl = ""
let commit = ""

const sh = (args: ReadonlyArray<string>, cwd: string) => execFileSync("git", [...args], { cwd, encoding: "utf8", env: { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@t", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@t" } }).trim()

/** git's smart HTTP server (a CGI program) behind Basic auth that wants the token as password. */
const startGitServer = (projectRoot: string): Promise<http.Server> => {
  const s = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x")
    const auth = req.headers.authorization ?? ""
    const password = auth.startsWith("Basic ") ? Buffer.from(auth.slice(6), "base64").toString().split(":").slice(1).join(":") : undefined
    const authorized = password === TOKEN
    seen.push({ path: url.pathname, authorized })
    if (!authorized) {
      res.writeHead(401, { "www-authenticate": 'Basic realm="git"' }).end("authentication required")
      return
    }
    const cgi = spawn("git", ["http-backend"], {
      env: {
        ...process.env,
        GIT_PROJECT_ROOT: projectRoot,
        GIT_HTTP_EXPORT_ALL: "1",
        PATH_INFO: url.pathname,
        QUERY_STRING: url.search.slice(1),
        REQUEST_METHOD: req.method ?? "GET",
        CONTENT_TYPE: req.headers["content-type"] ?? "",
        HTTP_CONTENT_ENCODING: req.headers["content-encoding"] ?? "",
        HTTP_GIT_PROTOCOL: String(req.headers["git-protocol"] ?? ""),
        REMOTE_USER: "git",
        REMOTE_ADDR: "127.0.0.1"
      }
    })
    req.pipe(cgi.stdin)
    let head = Buffer.alloc(0)
    let started = false
    cgi.stdout.on("data", (chunk: Buffer) => {
      if (started) return void res.write(chunk)
      head = Buffer.concat([head, chunk])
      const end = head.indexOf("\r\n\r\n")
      if (end < 0) return
      started = true
      const headers: Record<string, string> = {}
      let status = 200
      for (const line of head.subarray(0, end).toString().split("\r\n")) {
        const i = line.indexOf(":")
        const [k, v] = [line.slice(0, i).trim(), line.slice(i + 1).trim()]
        if (k.toLowerCase() === "status") status = Number(v.split(" ")[0])
        else headers[k] = v
      }
      res.writeHead(status, headers)
      res.write(head.subarray(end + 4))
    })
    cgi.on("close", () => res.end())
  })
  return new Promise((resolve) => s.listen(0, "127.0.0.1", () => resolve(s)))
}

const call = async (route: string, body?: unknown) => {
  const res = await server.app.request(route, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN}` },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await res.text()
  answers.push(text)
  return { status: res.status, text, body: text === "" ? undefined : JSON.parse(text) }
}

const EMPTY_HASH = createHash("sha256").update(new Uint8Array(0)).digest("hex")

/** Inits a remote repo with the given token, uploads its (empty) diff and runs `cat secret-file.txt`. */
const runFromRepo = async (runName: string, repoId: string, token: string, over: { readonly url: string; readonly privateKey: string } | undefined = undefined) => {
  const url = over?.url ?? gitUrl
  const init = await call("/api/project/main/repos/init", {
    repo_id: repoId,
    repo_info: { repo_type: "remote", repo_url: url, repo_branch: "main" },
    repo_creds: over === undefined ? { clone_url: gitUrl, oauth_token: token, private_key: null } : { clone_url: url, private_key: over.privateKey, oauth_token: null }
  })
  expect(init.status, init.text).toBe(200)
  const upload = await server.app.request(`/api/project/main/repos/upload_code?repo_id=${repoId}&hash=${EMPTY_HASH}`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/octet-stream" },
    body: new Uint8Array(0)
  })
  expect(upload.status, await upload.clone().text()).toBe(200)
  const applied = await call("/api/project/main/runs/apply", {
    plan: {
      run_spec: {
        run_name: runName,
        repo_id: repoId,
        repo_data: { repo_type: "remote", repo_url: url, repo_branch: "main", repo_hash: commit },
        repo_code_hash: EMPTY_HASH,
        configuration: { type: "task", commands: ["cat secret-file.txt", "git remote -v"], resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." } }
      }
    },
    force: false
  })
  expect(applied.status, applied.text).toBe(200)
  const start = Date.now()
  for (;;) {
    const run = await call("/api/project/main/runs/get", { run_name: runName })
    if (["done", "failed", "terminated"].includes(run.body.status)) return run.body
    if (Date.now() - start > 90_000) throw new Error(`run ${runName} did not finish: ${run.text.slice(0, 500)}`)
    await new Promise((r) => setTimeout(r, 250))
  }
}
const logOf = async (runName: string) => (await call("/api/project/main/logs/poll", { run_name: runName })).body.logs.map((l: any) => l.message).join("")

/** Every file under `dir` whose bytes contain `needle`. */
const filesContaining = (dir: string, needle: string): Array<string> =>
  !fs.existsSync(dir)
    ? []
    : (fs.readdirSync(dir, { recursive: true, withFileTypes: true }) as Array<fs.Dirent>)
        .filter((e) => e.isFile())
        .map((e) => path.join(e.parentPath, e.name))
        .filter((file) => {
          try {
            return fs.readFileSync(file).includes(Buffer.from(needle))
          } catch {
            return false
          }
        })

beforeAll(async () => {
  for (const method of ["log", "info", "warn", "error", "debug"] as const) {
    const original = console[method].bind(console)
    vi.spyOn(console, method).mockImplementation((...args: Array<unknown>) => {
      consoled.push(args.map(String).join(" "))
      original(...args)
    })
  }
  const repos = path.join(root, "repos")
  fs.mkdirSync(repos)
  sh(["init", "--quiet", "--bare", "--initial-branch=main", "private.git"], repos)
  const work = path.join(root, "work")
  fs.mkdirSync(work)
  sh(["init", "--quiet", "--initial-branch=main"], work)
  fs.writeFileSync(path.join(work, "secret-file.txt"), "content-of-the-private-repo\n")
  sh(["add", "."], work)
  sh(["commit", "--quiet", "-m", "one"], work)
  sh(["push", "--quiet", path.join(repos, "private.git"), "main"], work)
  commit = sh(["rev-parse", "HEAD"], work)
  git = await startGitServer(repos)
  gitUrl = `http://127.0.0.1:${(git.address() as AddressInfo).port}/private.git`
  server = await createServer({
    state: EmbeddedStateStore.layer({ dataDir: path.join(root, "data") }),
    blobs: blobsMemory,
    adminToken: ADMIN,
    secrets: { key: crypto.getRandomValues(new Uint8Array(32)) },
    plugins: [backendLocal, transportLocal],
    compute: { defaultBackends: [{ type: "local", config: { work_dir: workDir } }] },
    runner: { entry: path.resolve("cli/src/runner.ts") },
    engine: { resyncMs: 1_000 }
  })
}, 120_000)

afterAll(async () => {
  vi.restoreAllMocks()
  await server?.close()
  git?.close()
  fs.rmSync(root, { recursive: true, force: true })
})

describe("repo_creds of a private git repo", () => {
  it("the proxy refuses a clone without the token (the test's git server does need it)", async () => {
    const out = path.join(root, "anonymous")
    // Not execFileSync: the git server runs in this process.
    await expect(promisify(execFile)("git", ["clone", "--quiet", gitUrl, out], { env: { ...process.env, GIT_TERMINAL_PROMPT: "0" } })).rejects.toThrow()
    expect(seen.some((s) => !s.authorized)).toBe(true)
  })

  it("reach the runner's clone: the job reads the private repo's file; the token is nowhere else", async () => {
    const run = await runFromRepo("private-clone", "private", TOKEN)
    const log = await logOf("private-clone")
    expect(run.status, `${JSON.stringify(run.jobs[0].job_submissions.at(-1))}\n${log}`).toBe("done")
    expect(log).toContain("content-of-the-private-repo")
    expect(seen.some((s) => s.authorized)).toBe(true)
    // The clone's remote is the plain URL: the job cannot read the token from .git/config.
    expect(log).toContain(gitUrl)
    expect(log).not.toContain(TOKEN)
    // Not in an answer that does not ask for credentials.
    await call("/api/project/main/repos/get", { repo_id: "private" })
    await call("/api/project/main/repos/list")
    await call("/api/runs/list", {})
    for (const text of answers) expect(text).not.toContain(TOKEN)
    expect(consoled.filter((line) => line.includes(TOKEN))).toEqual([])
    expect(filesContaining(workDir, TOKEN)).toEqual([])
    // Sealed at rest: the state store's files do not hold the token, and a manager still gets it back.
    expect(filesContaining(path.join(root, "data"), TOKEN)).toEqual([])
    const got = await call("/api/project/main/repos/get", { repo_id: "private", include_creds: true })
    expect(got.body.repo_creds).toEqual({ clone_url: gitUrl, oauth_token: TOKEN, private_key: null })
  }, 120_000)

  it("a wrong token fails the run with git's reason, and without the token", async () => {
    const wrong = `${TOKEN}-wrong`
    const run = await runFromRepo("wrong-token", "wrong", wrong)
    expect(run.status).toBe("failed")
    const submission = run.jobs[0].job_submissions.at(-1)
    const said = `${submission.termination_reason_message ?? ""}\n${await logOf("wrong-token")}`
    expect(said).toMatch(/cannot clone/)
    expect(said).not.toContain(wrong)
    for (const text of answers) expect(text).not.toContain(wrong)
    expect(consoled.filter((line) => line.includes(wrong))).toEqual([])
  }, 120_000)
})

describeWithNetns(() => {
  let hosts: NetnsHosts
  beforeAll(async () => {
    hosts = await createNetnsHosts({ count: 1 })
  }, 120_000)
  afterAll(async () => {
    await hosts?.down()
  })

  it("an SSH private key as repo_creds clones over ssh from another host; the key is nowhere else", async () => {
    // The hosts share this machine's filesystem: the bare repo is at the same path on the host.
    const url = `ssh://root@${hosts.hosts[0]!.ip}:${hosts.hosts[0]!.port}${path.join(root, "repos", "private.git")}`
    const keyLine = hosts.privateKey.trim().split("\n")[1]!
    const run = await runFromRepo("ssh-clone", "private-ssh", "", { url, privateKey: hosts.privateKey })
    const log = await logOf("ssh-clone")
    expect(run.status, `${JSON.stringify(run.jobs[0].job_submissions.at(-1))}\n${log}`).toBe("done")
    expect(log).toContain("content-of-the-private-repo")
    expect(log).toContain(url)
    for (const text of answers) expect(text).not.toContain(keyLine)
    expect(filesContaining(workDir, keyLine)).toEqual([])
    expect(filesContaining(path.join(root, "data"), keyLine)).toEqual([])
    // A key the host does not accept fails the clone, without the key in what is said.
    const otherLine = hosts.otherKey.trim().split("\n")[1]!
    const refused = await runFromRepo("ssh-refused", "private-ssh-other", "", { url, privateKey: hosts.otherKey })
    expect(refused.status).toBe("failed")
    const said = `${refused.jobs[0].job_submissions.at(-1).termination_reason_message ?? ""}\n${await logOf("ssh-refused")}`
    expect(said).toMatch(/cannot clone/)
    expect(said).not.toContain(otherLine)
  }, 180_000)
})
