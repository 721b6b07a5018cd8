// The plugins of the default runner build (`dstack runner`, and what `dstack server` starts on
// its instances): the process and docker executors. A custom runner build lists its own.
import executorDocker from "@dstack-ts/executor-docker"
import executorProcess from "@dstack-ts/executor-process"

export const runnerPlugins = [executorProcess, executorDocker] as const
