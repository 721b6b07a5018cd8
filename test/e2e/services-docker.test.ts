// A Docker service through the proxy, end to end: a service with `image:` (the busybox test
// image, built locally) on the local backend, its container port published on a host port the
// runner reports. Its app is test/support/busybox-service.sh under busybox `nc`: plain HTTP and a
// WebSocket echo. Reached through /proxy/services/… with fetch and with the `ws` client; a
// caller without a token is refused, and a service with `auth: false` lets anyone in; an upload
// held at zero replicas waits for the app in the container, not for Docker's proxy before it.
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import WebSocket from "ws"
import type { Server } from "../../core/src/server/createServer.ts"
import type { Serving } from "../../core/src/server/serve.ts"
import type { httpCall } from "../support/api.ts"
import { startLocalServer } from "../support/localServer.ts"
import { describeWith } from "../support/components.ts"
import { dockerUnavailableReason, ensureBusyboxImage } from "../support/docker.ts"
import { waitRunning } from "../support/services.ts"
import { makeUntil } from "../support/until.ts"

const TOKEN = "services-docker-token"
const until = makeUntil({ timeoutMs: 60_000, everyMs: 250 })
const SCRIPT = fs.readFileSync(path.resolve("test/support/busybox-service.sh"), "utf8")
let server: Server
let serving: Serving
let call: ReturnType<typeof httpCall>

const url = (run: string, rest: string) => `${serving.url}/proxy/services/main/${run}${rest}`

const applyDockerService = async (name: string, extra: Record<string, unknown> = {}) => {
  const res = await call("/api/project/main/runs/apply", {
    plan: {
      run_spec: {
        run_name: name,
        repo_id: "services",
        repo_data: { repo_type: "virtual" },
        configuration: {
          type: "service",
          image: await ensureBusyboxImage(),
          env: { APP: SCRIPT },
          commands: ["printf '%s' \"$APP\" > /tmp/app.sh", "chmod +x /tmp/app.sh", "exec nc -ll -p 8000 -e /tmp/app.sh"],
          port: 8000,
          resources: { cpu: "1..", memory: "0.1GB..", disk: "0.1GB.." },
          ...extra
        }
      }
    }
  })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
}

/** Opens a WebSocket, sends each message in turn and collects the answers. */
const echo = (address: string, messages: ReadonlyArray<string>, headers: Record<string, string> = {}) =>
  new Promise<Array<string>>((resolve, reject) => {
    const socket = new WebSocket(address, { headers })
    const got: Array<string> = []
    socket.on("open", () => socket.send(messages[0]))
    socket.on("message", (data) => {
      got.push(String(data))
      if (got.length === messages.length) {
        socket.close()
        resolve(got)
      } else socket.send(messages[got.length])
    })
    socket.on("unexpected-response", (_req, res) => reject(new Error(`upgrade answered ${res.statusCode}`)))
    socket.on("error", reject)
  })

const dockerMissing = await dockerUnavailableReason()
describeWith("docker", dockerMissing === undefined, dockerMissing ?? "", () => {
  beforeAll(async () => {
    ;({ server, serving, call } = await startLocalServer({ token: TOKEN, maxInstances: 4, server: { services: { holdTimeoutMs: 60_000 } } }))
    await applyDockerService("boxed")
    await applyDockerService("boxed-open", { auth: false })
    await waitRunning(call, "boxed", 1, 120_000)
    await waitRunning(call, "boxed-open", 1, 120_000)
  }, 180_000)
  afterAll(async () => {
    for (const name of ["boxed", "boxed-open"]) await call?.("/api/project/main/runs/stop", { runs_names: [name], abort: true })
    await serving?.close()
  })

  it("serves HTTP from the container through the proxy, with the caller's token", async () => {
    const res = await fetch(url("boxed", "/hello?x=1"), { headers: { authorization: `Bearer ${TOKEN}` } })
    expect(res.status).toBe(200)
    expect(await res.text()).toBe("hello from busybox: GET /hello?x=1 HTTP/1.1")
    // The job ran in the image (the Docker executor), not as a process.
    const run = (await call("/api/project/main/runs/get", { run_name: "boxed" })).body
    expect(run.jobs[0].job_spec.image_name).toBe("dstack-ts-test/busybox:1")
  }, 90_000)

  it("carries a WebSocket to the container and back", async () => {
    const address = url("boxed", "/ws").replace(/^http/, "ws")
    expect(await echo(address, ["one", "two"], { authorization: `Bearer ${TOKEN}` })).toEqual(["echo one", "echo two"])
  }, 90_000)

  it("refuses a caller without a token or with a wrong one, over HTTP and WebSocket", async () => {
    const none = await fetch(url("boxed", "/hello"))
    expect(none.status).toBe(401)
    const wrong = await fetch(url("boxed", "/hello"), { headers: { authorization: "Bearer not-a-token" } })
    expect([401, 403]).toContain(wrong.status)
    await expect(echo(url("boxed", "/ws").replace(/^http/, "ws"), ["x"])).rejects.toThrow(/upgrade answered 401/)
  }, 60_000)

  it("holds a request with a body at zero replicas until the app in the container answers, then serves it", async () => {
    // Docker publishes the container's port as soon as the container starts, and its proxy on the
    // host port accepts a connection before the app listens (and closes it a few ms later): the
    // upload must not be sent (and spent) into such a connection. The app starts 2 s after its
    // container.
    await applyDockerService("boxed-zero", {
      replicas: "0..1",
      scaling: { metric: "rps", target: 10, scale_up_delay: 0, scale_down_delay: 60 },
      commands: ["printf '%s' \"$APP\" > /tmp/app.sh", "chmod +x /tmp/app.sh", "sleep 2", "exec nc -ll -p 8000 -e /tmp/app.sh"]
    })
    await until("the service is registered", async () => (await call("/api/project/main/services/get", { run_name: "boxed-zero" })).status, (s) => s === 200, 60_000)
    const upload = new Uint8Array(256 * 1024).fill(7)
    const answer = await fetch(url("boxed-zero", "/count"), { method: "POST", headers: { authorization: `Bearer ${TOKEN}` }, body: upload })
    const text = await answer.text()
    expect(answer.status, text).toBe(200)
    expect(text).toBe(`hello from busybox: POST /count HTTP/1.1 (${upload.length} bytes)`)
    const run = (await call("/api/project/main/runs/get", { run_name: "boxed-zero" })).body
    expect(run.jobs.length).toBe(1)
    await call("/api/project/main/runs/stop", { runs_names: ["boxed-zero"], abort: true })
  }, 180_000)

  it("lets anyone in to a service with auth: false", async () => {
    const res = await fetch(url("boxed-open", "/open"))
    expect(res.status).toBe(200)
    expect(await res.text()).toBe("hello from busybox: GET /open HTTP/1.1")
    expect(await echo(url("boxed-open", "/ws").replace(/^http/, "ws"), ["free"])).toEqual(["echo free"])
  }, 60_000)
})
