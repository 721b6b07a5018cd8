// Prints one plain closing line, `vitest: N passed, N failed, N skipped`, after vitest's own
// summary, so tools that read a run's last line know what it counted.
import type { Reporter, RunnerTestFile } from "vitest/node"

type Task = { type: string; mode?: string; result?: { state?: string }; tasks?: ReadonlyArray<Task> }

const count = (tasks: ReadonlyArray<Task>, acc = { passed: 0, failed: 0, skipped: 0 }) => {
  for (const task of tasks) {
    if (task.type === "test") {
      const state = task.result?.state
      if (state === "pass") acc.passed++
      else if (state === "fail") acc.failed++
      else acc.skipped++
    } else if (task.tasks) count(task.tasks, acc)
    if (task.type !== "test" && task.result?.state === "fail" && (!task.tasks || task.tasks.length === 0)) acc.failed++
  }
  return acc
}

export default class SummaryReporter implements Reporter {
  onFinished(files: ReadonlyArray<RunnerTestFile> = [], errors: ReadonlyArray<unknown> = []): void {
    const { passed, failed, skipped } = count(files as unknown as ReadonlyArray<Task>)
    const runtime = typeof (globalThis as { Deno?: unknown }).Deno === "undefined" ? "node" : "deno"
    process.stdout.write(`\nvitest-${runtime}: ${passed} passed, ${failed + errors.length} failed, ${skipped} skipped\n`)
  }
}
