// `npm run demo`: the main job on the embedded default, the way a newcomer would do it by hand:
// start `dstack server` (embedded state under .dstack-ts/demo-server), apply examples/hello
// with `dstack apply -y` (its output streams live), show `dstack ps -a`, stop the server.
// Exits non-zero if any step fails.
import { spawn } from "node:child_process"
import * as path from "node:path"

const root = path.resolve(import.meta.dirname, "..")
const cli = path.join(root, "cli", "bin", "dstack.mjs")
const env = { ...process.env, DSTACK_SERVER_DIR: process.env.DSTACK_SERVER_DIR ?? path.join(root, ".dstack-ts", "demo-server") }

const step = (title: string) => console.log(`\n\x1b[1m==> ${title}\x1b[0m`)

const dstack = (args: ReadonlyArray<string>) =>
  new Promise<number>((resolve) => {
    console.log(`$ dstack ${args.join(" ")}`)
    const child = spawn(process.execPath, [cli, ...args], { cwd: root, env, stdio: "inherit" })
    child.on("close", (code) => resolve(code ?? 1))
  })

step("Starting the server (embedded state store, local backend)")
const server = spawn(process.execPath, [cli, "server", "--port", "0"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] })
const started = await new Promise<boolean>((resolve) => {
  let out = ""
  const timer = setTimeout(() => resolve(false), 120_000)
  const onData = (d: Buffer) => {
    process.stdout.write(d)
    out += d
    if (/running at http/.test(out)) {
      clearTimeout(timer)
      resolve(true)
    }
  }
  server.stdout.on("data", onData)
  server.stderr.on("data", onData)
  server.on("exit", () => resolve(false))
})

let code = started ? 0 : 1
if (started) {
  step("Running examples/hello/.dstack.yml")
  code = await dstack(["apply", "-f", "examples/hello/.dstack.yml", "-y"])
  if (code === 0) {
    step("The run, as `dstack ps -a` shows it")
    code = await dstack(["ps", "-a"])
  }
} else {
  console.error("The server did not start (see its output above).")
}

step("Stopping the server")
server.kill("SIGTERM")
await new Promise((r) => server.once("exit", r))
console.log(code === 0 ? "\nThe demo ran: a server, a run, its logs. See README.md for the tour." : "\nThe demo failed.")
process.exit(code)
