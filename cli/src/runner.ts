// The default runner build: core's runner program with the process and docker executors.
// `dstack server` starts it on its instances (the local backend bundles it into one file);
// `node --import tsx cli/src/runner.ts --port 0 --work-dir DIR` or `deno run -A` runs it by
// hand. Arguments, ready line and shutdown: Runner.runnerMain in @dstack-ts/core.
import { Runner } from "@dstack-ts/core"
import { runnerPlugins } from "./runnerPlugins.ts"

// No top-level await: the bundle can then be a script, the entry of a startup snapshot (RunnerLaunch).
void Runner.runnerMain(process.argv.slice(2), { plugins: runnerPlugins })
