// A custom runner build: the default executors plus the archive-url repo type. A server runs
// it on its instances with `createServer({ runner: { entry } })` or, for the local backend,
// `runner_entry` in the backend's configuration.
import { Runner } from "@dstack-ts/core"
import executorDocker from "@dstack-ts/executor-docker"
import executorProcess from "@dstack-ts/executor-process"
import archiveUrl from "./archive-url.ts"

await Runner.runnerMain(process.argv.slice(2), { plugins: [executorProcess, executorDocker, archiveUrl] })
