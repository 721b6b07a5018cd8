// The docker executor against the real dockerd, with a busybox image imported locally.
import { beforeAll, describe, expect, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Exit } from "effect"
import { describeWith } from "../../../test/support/components.ts"
import { BUSYBOX_IMAGE, containerLabels, containersWithLabel, dockerRuntimes, dockerUnavailableReason, ensureBusyboxImage } from "../../../test/support/docker.ts"
import * as DockerExecutor from "../src/DockerExecutor.ts"
import type { Executor } from "@dstack-ts/core"

const unavailable = await dockerUnavailableReason()

let counter = 0
const spec = (commands: Array<string>, extra: Partial<Executor.ExecutionSpec> = {}): Executor.ExecutionSpec => {
  const repoDir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-docker-"))
  fs.mkdirSync(path.join(repoDir, "sub"))
  return {
    commands,
    env: {},
    repoDir,
    image: BUSYBOX_IMAGE,
    privileged: false,
    ports: [],
    mounts: [],
    gpus: 0,
    labels: { "dstack-ts.test": `${process.pid}-${++counter}` },
    ...extra
  }
}

const startCollecting = (s: Executor.ExecutionSpec) =>
  Effect.gen(function* () {
    const out = { stdout: "", stderr: "", pulling: false }
    const execution = yield* DockerExecutor.make().start(s, {
      log: (stream, bytes) => {
        out[stream] += new TextDecoder().decode(bytes)
      },
      pulling: () => {
        out.pulling = true
      }
    })
    return { execution, out }
  })

const waitForOutput = (out: { stdout: string }, re: RegExp) =>
  Effect.gen(function* () {
    for (let i = 0; i < 200; i++) {
      if (re.test(out.stdout)) return
      yield* Effect.sleep("25 millis")
    }
    return yield* Effect.die(new Error(`output never matched ${re}: ${JSON.stringify(out.stdout)}`))
  })

const containersOf = (s: Executor.ExecutionSpec) =>
  Effect.promise(() => containersWithLabel(`dstack-ts.test=${s.labels!["dstack-ts.test"]}`))

describeWith("docker", unavailable === undefined, unavailable ?? "", () => {
  beforeAll(async () => {
    await ensureBusyboxImage()
  })

  it.live("runs the commands under /bin/sh -c, demultiplexes the output and removes the container", () =>
    Effect.gen(function* () {
      const s = spec(["echo one", "echo err >&2", "echo two"])
      const { execution, out } = yield* startCollecting(s)
      expect(execution.id).toMatch(/^[0-9a-f]{64}$/)
      expect(yield* execution.exit).toEqual({ exitCode: 0 })
      expect(out).toEqual({ stdout: "one\ntwo\n", stderr: "err\n", pulling: false })
      expect(yield* containersOf(s)).toEqual([])
    }))

  // Docker ends a followed log when the container ends, sometimes before its last entries were
  // sent (about 1 fast 20,000-line output in 4 when several end together): each must come whole.
  it.live("keeps the last lines of fast outputs of containers ending together", () =>
    Effect.gen(function* () {
      const lines = 20_000
      const runs = yield* Effect.all(
        Array.from({ length: 8 }, () =>
          Effect.gen(function* () {
            const { execution, out } = yield* startCollecting(spec([`i=0; while [ $i -lt ${lines} ]; do echo "line $i"; i=$((i+1)); done; echo last >&2`]))
            return { exit: yield* execution.exit, out }
          })),
        { concurrency: "unbounded" }
      )
      for (const { exit, out } of runs) {
        expect(exit).toEqual({ exitCode: 0 })
        const got = out.stdout.split("\n").filter((l) => l !== "")
        expect({ count: got.length, last: got.at(-1), stderr: out.stderr }).toEqual({ count: lines, last: `line ${lines - 1}`, stderr: "last\n" })
        expect(got.every((l, i) => l === `line ${i}`)).toBe(true)
      }
    }), 60_000)

  it.live("reports a non-zero exit code", () =>
    Effect.gen(function* () {
      const s = spec(["echo before", "exit 5"])
      const { execution, out } = yield* startCollecting(s)
      expect((yield* execution.exit).exitCode).toBe(5)
      expect(out.stdout).toBe("before\n")
      expect(yield* containersOf(s)).toEqual([])
    }))

  it.live("gives the job its env, working_dir under /workflow (the code), user and shm size", () =>
    Effect.gen(function* () {
      const s = spec(['echo "$GREETING"', "pwd", "cat code.txt", "id -u", "df -k /dev/shm | tail -n 1 | awk '{print $2}'"], {
        env: { GREETING: "hello from docker" },
        workingDir: "sub",
        user: "nobody",
        shmSizeBytes: 64 * 1024 * 1024
      })
      fs.writeFileSync(path.join(s.repoDir, "sub", "code.txt"), "the code\n")
      const { execution, out } = yield* startCollecting(s)
      expect(yield* execution.exit).toEqual({ exitCode: 0 })
      expect(out.stdout).toBe("hello from docker\n/workflow/sub\nthe code\n65534\n65536\n")
    }))

  it.live("uses the entrypoint with the commands as its arguments", () =>
    Effect.gen(function* () {
      const s = spec(["a b", "c"], { entrypoint: ["/bin/echo", "args:"] })
      const { execution, out } = yield* startCollecting(s)
      expect(yield* execution.exit).toEqual({ exitCode: 0 })
      expect(out.stdout).toBe("args: a b c\n")
    }))

  it.live("mounts a host directory as a volume", () =>
    Effect.gen(function* () {
      const data = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-volume-"))
      fs.writeFileSync(path.join(data, "in.txt"), "from the host\n")
      const s = spec(["cat /data/in.txt", "echo from the job > /data/out.txt"], {
        mounts: [{ hostPath: data, containerPath: "/data" }]
      })
      const { execution, out } = yield* startCollecting(s)
      expect(yield* execution.exit).toEqual({ exitCode: 0 })
      expect(out.stdout).toBe("from the host\n")
      expect(fs.readFileSync(path.join(data, "out.txt"), "utf8")).toBe("from the job\n")
    }))

  it.live("publishes a port on 127.0.0.1 and reports the host port", () =>
    Effect.gen(function* () {
      const s = spec(["echo serving", "httpd -f -p 8080 -h /workflow"], { ports: [{ containerPort: 8080 }] })
      fs.writeFileSync(path.join(s.repoDir, "index.html"), "hello over http\n")
      const { execution, out } = yield* startCollecting(s)
      expect(execution.ports).toHaveLength(1)
      const { containerPort, hostPort } = execution.ports[0]
      expect(containerPort).toBe(8080)
      expect(hostPort).toBeGreaterThan(0)
      yield* waitForOutput(out, /serving/)
      let body = ""
      for (let i = 0; i < 50 && body === ""; i++) {
        body = yield* Effect.promise(() =>
          fetch(`http://127.0.0.1:${hostPort}/index.html`).then((r) => (r.ok ? r.text() : ""), () => "")
        )
        if (body === "") yield* Effect.sleep("50 millis")
      }
      expect(body).toBe("hello over http\n")
      const exit = yield* execution.stop("1 second")
      expect(exit.endedBy).toBe("stop")
      expect(yield* containersOf(s)).toEqual([])
    }))

  it.live("stop delivers SIGTERM to the job and keeps its last output", () =>
    Effect.gen(function* () {
      const s = spec(["trap 'echo cleaning up; exit 3' TERM", "echo started", "while :; do sleep 0.1; done"])
      const { execution, out } = yield* startCollecting(s)
      yield* waitForOutput(out, /started/)
      expect(yield* execution.stop("10 seconds")).toEqual({ exitCode: 3, endedBy: "stop" })
      expect(out.stdout).toBe("started\ncleaning up\n")
      expect(yield* containersOf(s)).toEqual([])
    }))

  it.live("abort kills the container at once", () =>
    Effect.gen(function* () {
      const s = spec(["trap '' TERM", "echo started", "sleep 300"])
      const { execution, out } = yield* startCollecting(s)
      yield* waitForOutput(out, /started/)
      const started = Date.now()
      expect(yield* execution.abort).toEqual({ exitCode: 137, endedBy: "abort" })
      expect(Date.now() - started).toBeLessThan(5_000)
      expect(yield* containersOf(s)).toEqual([])
    }))

  it.live("runs without GPUs, and says so, when GPUs are requested but Docker has no nvidia runtime", () =>
    Effect.gen(function* () {
      const hasNvidia = (yield* Effect.promise(dockerRuntimes)).includes("nvidia")
      const notes: Array<string> = []
      const execution = yield* DockerExecutor.make().start(spec(["echo ran"], { gpus: 1 }), {
        log: () => undefined,
        note: (message) => notes.push(message)
      })
      expect((yield* execution.exit).exitCode).toBe(0)
      expect(notes).toEqual(hasNvidia ? [] : ["GPUs were requested but Docker has no nvidia runtime: running without GPUs"])
    }))

  it.live("a missing image fails as CreatingContainer, naming the image", () =>
    Effect.gen(function* () {
      const s = spec(["true"], { image: "dstack-ts-test/does-not-exist:1" })
      const result = yield* Effect.exit(startCollecting(s))
      expect(Exit.isFailure(result)).toBe(true)
      if (Exit.isFailure(result) && result.cause._tag === "Fail") {
        expect(result.cause.error.reason).toBe("CreatingContainer")
        expect(result.cause.error.message).toContain("dstack-ts-test/does-not-exist:1")
      } else {
        expect.fail(`expected a failure, got ${String(result)}`)
      }
    }))

  it.live("a host port already taken fails as PortsBinding and leaves no container", () =>
    Effect.gen(function* () {
      const server = net.createServer()
      const port = yield* Effect.promise(
        () => new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port)))
      )
      const s = spec(["sleep 30"], { ports: [{ containerPort: 80, hostPort: port }] })
      const result = yield* Effect.exit(startCollecting(s))
      server.close()
      if (Exit.isFailure(result) && result.cause._tag === "Fail") {
        expect(result.cause.error.reason).toBe("PortsBinding")
        expect(result.cause.error.message).toContain(String(port))
      } else {
        expect.fail(`expected a failure, got ${String(result)}`)
      }
      expect(yield* containersOf(s)).toEqual([])
    }))

  // A process that starts a container job (fixtures/host.ts, a stand-in for the runner) is
  // killed with SIGKILL: its watchdog removes the container. Under Deno the host runs on Deno,
  // so the watchdog is started with `deno eval`.
  it("removes the container when the process that started it is killed with SIGKILL", async () => {
    const host = fileURLToPath(new URL("./fixtures/host.ts", import.meta.url))
    const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined"
    const label = `dstack-ts.test=${process.pid}-host-${++counter}`
    const args = isDeno ? ["run", "-A", host, BUSYBOX_IMAGE, label] : ["--import", "tsx", host, BUSYBOX_IMAGE, label]
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] })
    const id = await new Promise<string>((resolve, reject) => {
      let out = ""
      child.stdout!.on("data", (d) => {
        out += String(d)
        if (out.includes("\n")) resolve(out.trim())
      })
      child.once("exit", (code) => reject(new Error(`the host exited (${code}) before it started the job`)))
    })
    expect(await containersWithLabel(label)).toEqual([id])
    child.kill("SIGKILL")
    let left = await containersWithLabel(label)
    for (let i = 0; i < 150 && left.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 100))
      left = await containersWithLabel(label)
    }
    expect(left, "the container outlived the process that started it").toEqual([])
  }, 60_000)

  it.live("the containers of one executor carry one watchdog's label", () =>
    Effect.gen(function* () {
      const executor = DockerExecutor.make()
      const a = spec(["sleep 30"])
      const b = spec(["sleep 30"])
      const first = yield* executor.start(a, { log: () => {} })
      const second = yield* executor.start(b, { log: () => {} })
      const labels = yield* Effect.promise(() => Promise.all([first.id, second.id].map(async (id) => (await containerLabels(id))[DockerExecutor.WATCHDOG_LABEL])))
      expect(labels[0]).toMatch(/^[0-9a-f-]{36}$/)
      expect(labels[1]).toBe(labels[0])
      yield* first.abort
      yield* second.abort
    }))

  // The terminal's size is the one asked from the command's first instruction on, and input sent
  // right after a resize reaches the command after the new size: the Engine's resize call and
  // the attached stream are two connections, so each is ordered here, not left to race.
  it.live("gives an exec the terminal size asked before its command runs, and input after a resize sees the new size", () =>
    Effect.gen(function* () {
      const s = spec(["sleep 60"])
      const { execution } = yield* startCollecting(s)
      for (let round = 0; round < 5; round++) {
        let out = ""
        let resized = false
        const ended = yield* Effect.promise(() =>
          new Promise<{ out: string; exit: Executor.ExecExit }>((resolve, reject) => {
            let session: Executor.ExecSession | undefined
            Effect.runPromise(execution.exec!({ command: "stty size; read x; stty size", env: {}, tty: { cols: 100, rows: 30 } }, {
              output: (_stream, bytes) => {
                out += new TextDecoder().decode(bytes)
                if (!resized && out.includes("\n")) {
                  resized = true
                  session!.resize(120, 40)
                  session!.write(new TextEncoder().encode("go\n"))
                }
              },
              exit: (exit) => resolve({ out, exit })
            })).then((started) => (session = started), reject)
          })
        )
        expect(ended.out, `round ${round}`).toMatch(/^30 100\r\n/)
        expect(ended.out, `round ${round}`).toMatch(/go\r\n40 120\r\n$/)
        expect(ended.exit).toEqual({ code: 0 })
      }
      yield* execution.abort
    }), 60_000)
})

// A stand-in Engine on a unix socket: checks what the executor sends when it pulls.
describe("DockerExecutor pull (stand-in Engine)", () => {
  it.live("pulls an absent image with X-Registry-Auth and reports a pull error as CreatingContainer", () =>
    Effect.gen(function* () {
      const socketPath = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-engine-")), "docker.sock")
      const seen: Array<{ method: string; url: string; auth?: string }> = []
      const server = http.createServer((req, res) => {
        seen.push({ method: req.method!, url: req.url!, ...(req.headers["x-registry-auth"] ? { auth: String(req.headers["x-registry-auth"]) } : {}) })
        if (req.method === "GET" && /\/images\/.+\/json/.test(req.url!)) {
          res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ message: "No such image" }))
        } else if (req.method === "POST" && req.url!.includes("/images/create")) {
          res.writeHead(200, { "content-type": "application/json" })
          res.end(JSON.stringify({ status: "Pulling" }) + "\n" + JSON.stringify({ error: "pull access denied: bad credentials" }) + "\n")
        } else {
          res.writeHead(500).end(JSON.stringify({ message: `unexpected ${req.method} ${req.url}` }))
        }
      })
      yield* Effect.promise(() => new Promise<void>((resolve) => server.listen(socketPath, resolve)))
      let pulling = false
      const result = yield* Effect.exit(
        DockerExecutor.make({ socketPath }).start(
          spec(["true"], {
            image: "registry.example.com:5000/team/private",
            registryAuth: { username: "alice", password: "s3cret", serverAddress: "registry.example.com:5000" }
          }),
          { log: () => undefined, pulling: () => (pulling = true) }
        )
      )
      yield* Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
      expect(pulling).toBe(true)
      const pull = seen.find((r) => r.url.includes("/images/create"))!
      expect(pull.url).toContain(`fromImage=${encodeURIComponent("registry.example.com:5000/team/private")}`)
      expect(pull.url).toContain("tag=latest")
      const auth = JSON.parse(Buffer.from(pull.auth!.replace(/-/g, "+").replace(/_/g, "/"), "base64").toString("utf8"))
      expect(auth).toEqual({ username: "alice", password: "s3cret", serveraddress: "registry.example.com:5000" })
      if (Exit.isFailure(result) && result.cause._tag === "Fail") {
        expect(result.cause.error.reason).toBe("CreatingContainer")
        expect(result.cause.error.message).toContain("pull access denied: bad credentials")
      } else {
        expect.fail(`expected a failure, got ${String(result)}`)
      }
    }))
})
