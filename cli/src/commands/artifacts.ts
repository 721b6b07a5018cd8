// `dstack artifacts list RUN` and `dstack artifacts download RUN [--path DIR] [--job JOB]`: the
// folders a workflow job kept when it ended (docs/workflows.md). Download streams the tar.gz
// into DIR and checks every file's size and SHA-256 against the server's manifest.
import { defineCommand } from "citty"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { CliError, clientFor, globalArgs, runEffect } from "../context.ts"
import { print, success, table } from "../ui.ts"

const formatSize = (n: number) => (n < 1024 ? `${n}B` : n < 1024 ** 2 ? `${(n / 1024).toFixed(1)}KB` : n < 1024 ** 3 ? `${(n / 1024 ** 2).toFixed(1)}MB` : `${(n / 1024 ** 3).toFixed(1)}GB`)

const hashFile = (file: string) =>
  new Promise<{ size: number; sha256: string }>((resolve, reject) => {
    const hash = createHash("sha256")
    let size = 0
    fs.createReadStream(file).on("data", (c) => {
      hash.update(c as Buffer)
      size += (c as Buffer).length
    }).on("error", reject).on("end", () => resolve({ size, sha256: hash.digest("hex") }))
  })

const list = defineCommand({
  meta: { name: "list", description: "List the artifacts of a run's jobs" },
  args: { run: { type: "positional", description: "The run name", required: true }, ...globalArgs },
  run: async ({ args }) => {
    const client = await clientFor()
    const listed = await client.artifacts.list(args.run)
    if (listed.jobs.length === 0) {
      print(`Run ${args.run} kept no artifacts`)
      return
    }
    print(table(
      ["JOB", "FILE", "SIZE", "SHA256"],
      listed.jobs.flatMap((j) => j.files.map((f) => [j.jobName, f.path, formatSize(f.size), f.sha256.slice(0, 16)]))
    ))
  }
})

const download = defineCommand({
  meta: { name: "download", description: "Download a run's artifacts into a folder (the working directory by default)" },
  args: {
    run: { type: "positional", description: "The run name", required: true },
    path: { type: "string", description: "The folder to write the files into", default: "." },
    job: { type: "string", description: "The job, when several jobs of the run kept artifacts" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const client = await clientFor()
    const { Stream } = await import("effect")
    const { Workflows } = await import("@dstack-ts/core")
    const listed = await client.artifacts.list(args.run)
    const job = args.job === undefined ? (listed.jobs.length === 1 ? listed.jobs[0] : undefined) : listed.jobs.find((j) => j.jobName === args.job)
    if (job === undefined) {
      throw new CliError(listed.jobs.length === 0
        ? `Run ${args.run} kept no artifacts`
        : `Run ${args.run} has artifacts of ${args.job === undefined ? "several jobs" : `no job ${args.job}`}: give --job (one of ${listed.jobs.map((j) => j.jobName).join(", ")})`)
    }
    const dir = path.resolve(args.path)
    fs.mkdirSync(dir, { recursive: true })
    const body = await client.artifacts.download(args.run, { jobName: job.jobName })
    await runEffect(Workflows.Artifacts.extractArtifacts(Stream.fromReadableStream({ evaluate: () => body, onError: (e) => new Error(`the download broke off: ${String(e)}`) }), dir))
    const wrong: Array<string> = []
    for (const file of job.files) {
      const got = await hashFile(path.join(dir, file.path)).catch(() => undefined)
      if (got === undefined) wrong.push(`${file.path} is missing`)
      else if (got.size !== file.size || got.sha256 !== file.sha256) wrong.push(`${file.path} has ${got.size} bytes (sha256 ${got.sha256.slice(0, 16)}), the manifest says ${file.size} (${file.sha256.slice(0, 16)})`)
    }
    if (wrong.length > 0) throw new CliError(`The artifacts of ${args.run} did not arrive whole: ${wrong.join("; ")}`)
    success(`${job.files.length} file(s), ${formatSize(job.files.reduce((n, f) => n + f.size, 0))}, of ${job.jobName} written to ${dir}; sizes and SHA-256 match`)
  }
})

export default defineCommand({
  meta: { name: "artifacts", description: "List and download the artifacts workflow jobs kept" },
  subCommands: { list, download }
})
