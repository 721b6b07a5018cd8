// What `dstack attach` and an attached `dstack apply` say of a run's `ssh RUN` alias (written by
// the SDK's attach when the server runs an SSH proxy) and, for a dev environment with `ide`, the
// IDE's remote-SSH link to the job's working directory, as upstream prints it.
import { spawn } from "node:child_process"
import type * as DstackClient from "@dstack-ts/client"

type Run = DstackClient.Run

/** The job's working directory, asked through the alias (`ssh RUN pwd`); undefined when that fails. */
const workingDir = (configPath: string, host: string): Promise<string | undefined> =>
  new Promise((resolve) => {
    const child = spawn("ssh", ["-F", configPath, "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", host, "pwd"], { stdio: ["ignore", "pipe", "ignore"] })
    let out = ""
    child.stdout.on("data", (d) => (out += d))
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
    child.on("error", () => resolve(undefined))
    child.on("close", (code) => {
      clearTimeout(timer)
      const dir = out.trim().split("\n").at(-1)
      resolve(code === 0 && dir !== undefined && dir.startsWith("/") ? dir : undefined)
    })
  })

/** Lines about reaching the attached run over SSH: the alias, the Include hint, the IDE link. */
export const sshAccessLines = async (run: Run): Promise<ReadonlyArray<string>> => {
  const configuration = run.entity.runSpec.configuration
  const ide = configuration.type === "dev-environment" ? configuration.ide : undefined
  const ssh = run.ssh
  if (ssh === undefined) {
    return ide === undefined ? [] : [`No IDE link: the server runs no SSH proxy (start it with --sshproxy-port), which ${ide}'s remote-SSH goes through`]
  }
  const lines = [`To connect to ${run.name} over SSH: ssh ${ssh.host}  (alias in ${ssh.configPath})`]
  if (ssh.includeHint !== undefined) lines.push(`Note: ${ssh.includeHint}`)
  if (ide !== undefined) {
    const dir = await workingDir(ssh.configPath, ssh.host)
    const name = ide === "vscode" ? "VS Code" : "Cursor"
    lines.push(`To open in ${name}, use this link:`, `  ${ide}://vscode-remote/ssh-remote+${run.name}${dir ?? ""}`)
    if (dir === undefined) lines.push("  (the working directory could not be read over `ssh`; the link opens the home directory)")
  }
  return lines
}
