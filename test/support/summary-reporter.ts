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
  }
  return acc
}

export default class SummaryReporter implements Reporter {
  onFinished(files: ReadonlyArray<RunnerTestFile> = [], errors: ReadonlyArray<unknown> = []): void {
    const counted = count(files as unknown as ReadonlyArray<Task>)
    const { passed, skipped } = counted
    // A file that failed outside its tests (an import, a hook) counts as one failure.
    let failed = counted.failed
    for (const file of files as unknown as ReadonlyArray<Task>) {
      if (file.result?.state === "fail" && count(file.tasks ?? []).failed === 0) failed++
    }
    const runtime = typeof (globalThis as { Deno?: unknown }).Deno === "undefined" ? "node" : "deno"
    process.stdout.write(`\nvitest-${runtime}: ${passed} passed, ${failed + errors.length} failed, ${skipped} skipped\n`)
  }
}
