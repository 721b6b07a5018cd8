// `dstack init`: registers the repo in the current directory with the project, so that runs
// can mount it: a git checkout with a remote becomes a remote repo (the runner clones it and
// applies the uncommitted diff), anything else (or `--local`) a local repo (its files uploaded).
import { defineCommand } from "citty"
import { readFile } from "node:fs/promises"
import { CliError, clientFor, globalArgs, runEffect } from "../context.ts"
import { success, withSpinner } from "../ui.ts"

export default defineCommand({
  meta: { name: "init", description: "Initialize the repo in the current directory for the project" },
  args: {
    token: { type: "string", description: "An OAuth token for the remote Git repo, stored with it (runners do not use it yet: private repos cannot be cloned)", valueHint: "oauth_token" },
    "git-identity": { type: "string", description: "A private SSH key for the remote Git repo, stored with it (runners do not use it yet: private repos cannot be cloned)", valueHint: "path" },
    local: { type: "boolean", description: "Treat the directory as a local repo (upload its files) even if it is a Git repo" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const { LocalRepo, RemoteRepo } = await import("@dstack-ts/core")
    const client = await clientFor()
    const dir = process.cwd()
    const remote = args.local === true ? undefined : await runEffect(RemoteRepo.fromDir(dir)).catch(() => undefined)
    const repo = remote ?? (await runEffect(LocalRepo.fromDir(dir)))
    let creds: Record<string, unknown> | undefined
    if (args.token) creds = { protocol: "https", oauth_token: args.token }
    if (args["git-identity"]) {
      const key = await readFile(args["git-identity"], "utf8").catch((e: Error) => {
        throw new CliError(`--git-identity: cannot read ${args["git-identity"]}: ${e.message}`)
      })
      creds = { ...creds, protocol: "ssh", private_key: key }
    }
    await withSpinner("Initializing the repo", () => client.repos.init(repo, creds ? { creds } : {}))
    success(`Repo ${repo.repoId} (${repo.repoData.repoType}) initialized in project ${client.project}`)
  }
})
