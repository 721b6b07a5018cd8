// The runner build that goes into Kubernetes pods in the tests: core's runner program with only
// the process executor (inside the pod the job's image already is the container; see
// DSTACK_RUNNER_IN_CONTAINER). k8s-runner-image.ts bundles it into the runner image.
import { Runner } from "@dstack-ts/core"
import executorProcess from "@dstack-ts/executor-process"

await Runner.runnerMain(process.argv.slice(2), { plugins: [executorProcess] })
