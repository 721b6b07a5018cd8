// `dstack init`: registers the repo in the current directory with the project, so that runs
// can mount it.
import { defineCommand } from "citty"
import { clientFor, globalArgs } from "../context.ts"
import { success, withSpinner } from "../ui.ts"

export default defineCommand({
  meta: { name: "init", description: "Initialize the repo in the current directory for the project" },
  args: {
    token: { type: "string", description: "An OAuth token to access the remote Git repo", valueHint: "oauth_token" },
    "git-identity": { type: "string", description: "The private SSH key to access the remote Git repo", valueHint: "path" },
    "ssh-identity": { type: "string", description: "The private SSH key to reach run instances", valueHint: "path" },
    local: { type: "boolean", description: "Treat the directory as a local repo (upload its files) even if it is a Git repo" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const client = await clientFor()
    await withSpinner("Initializing the repo", () =>
      client.repos.init({ dir: process.cwd(), local: args.local === true, oauthToken: args.token, gitIdentityFile: args["git-identity"] })
    )
    success(`Repo initialized in project ${client.project}`)
  }
})
