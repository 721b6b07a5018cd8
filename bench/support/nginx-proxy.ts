// The services bench's native reference arm: nginx as a reverse proxy in front of the same
// replica (keep-alive to it, no buffering either way), what a proxy hop costs when it is not
// JavaScript. One process (`master_process off`), so its CPU per request is read off one pid.
// Only where nginx is installed (Debian: `apt-get install nginx-light`); else the arm is left out
// and the bench says so.
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { freePort } from "../../test/support/services.ts"
import { type Child, rssOf } from "./server.ts"

/** nginx's path, from $BENCH_NGINX, PATH or /usr/sbin; undefined when it is not installed. */
export const findNginx = (): string | undefined => {
  const candidates = [process.env.BENCH_NGINX, ...(process.env.PATH ?? "").split(path.delimiter).map((d) => path.join(d, "nginx")), "/usr/sbin/nginx"]
  return candidates.find((c): c is string => c !== undefined && c !== "" && fs.existsSync(c) && spawnSync(c, ["-v"]).status === 0)
}

const accepts = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1")
    socket.once("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.once("error", () => resolve(false))
  })

/** nginx in front of `target` (host:port), listening on a free loopback port. */
export const startNginxProxy = async (nginx: string, target: string): Promise<Child> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-bench-nginx-"))
  const port = await freePort()
  const conf = path.join(dir, "nginx.conf")
  fs.writeFileSync(conf, [
    "daemon off;",
    "master_process off;",
    `pid ${path.join(dir, "nginx.pid")};`,
    `error_log ${path.join(dir, "error.log")} warn;`,
    "events { worker_connections 1024; }",
    "http {",
    "  access_log off;",
    `  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;`,
    `  fastcgi_temp_path ${dir}/fastcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;`,
    `  upstream replica { server ${target}; keepalive 64; }`,
    `  server {`,
    `    listen 127.0.0.1:${port};`,
    "    keepalive_requests 1000000;",
    "    location / {",
    "      proxy_pass http://replica;",
    "      proxy_http_version 1.1;",
    '      proxy_set_header Connection "";',
    "      proxy_buffering off;",
    "      proxy_request_buffering off;",
    "    }",
    "  }",
    "}",
    ""
  ].join("\n"))
  const proc = spawn(nginx, ["-p", dir, "-c", conf], { stdio: ["ignore", "ignore", "pipe"] })
  let err = ""
  proc.stderr!.on("data", (d: Buffer) => (err += d.toString()))
  const remove = () => fs.rmSync(dir, { recursive: true, force: true })
  for (let i = 0; i < 100 && !(await accepts(port)); i++) {
    if (proc.exitCode !== null) {
      remove()
      throw new Error(`nginx exited with ${proc.exitCode}: ${err}${fs.existsSync(path.join(dir, "error.log")) ? fs.readFileSync(path.join(dir, "error.log"), "utf8") : ""}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  const exited = new Promise<void>((r) => proc.once("exit", () => r()))
  return {
    url: `http://127.0.0.1:${port}`,
    pid: proc.pid!,
    proc,
    rssMiB: () => rssOf(proc.pid!),
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGQUIT")
        const killer = setTimeout(() => proc.kill("SIGKILL"), 10_000)
        await exited
        clearTimeout(killer)
      }
      remove()
    }
  }
}
